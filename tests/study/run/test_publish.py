"""What a run leaves on its MLflow parent run: plots, split summary, config, registered model."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
import optuna
import pytest
import torch
from mlflow import MlflowClient

import models
from data_pipeline import (
    MnistFiles,
    Normalizer,
    SearchData,
    TensorSet,
    find_mnist,
    prepare_search_data,
    to_tensor_set,
)
from study.config import StudyConfig, resolve_config
from study.run.evaluation import Restored, restore_best
from study.run.publish import (
    CONFIG_PATH,
    REPORT_PATH,
    config_toml,
    publish_study,
    registered_model_name,
)
from study.search.search_space import SearchSpace
from study.store.result import Evaluation, StudySummary
from study.tracking import MlflowTracker, NullTracker
from study.train.training import evaluate
from tests.helpers import STUDY_TRAIN_IMAGES, evaluated_here
from tests.synthetic import write_synthetic_mnist


@pytest.mark.parametrize(("study_name", "expected"), [
    ("mnist", "mnist-study-mnist"),
    ("cnn sweep/v2", "mnist-study-cnn-sweep-v2"),
    ("///", "mnist-study-study"),
])
def test_registered_model_name_is_derived_from_the_study(study_name: str, expected: str) -> None:
    assert registered_model_name(study_name) == expected  # registry-safe, still recognisable


def test_resolved_config_is_a_file_run_accepts_unchanged(tmp_path: Path) -> None:
    config = StudyConfig(study_name="s", n_trials=7, timeout=90.5, data_dir=tmp_path / "d e",
                         tracking_uri=f"sqlite:///{tmp_path}/m.db", val_fraction=0.2,
                         search_space=SearchSpace(lr=(1e-3, 1e-2), optimizers=("adam",)))
    path = tmp_path / "resolved.toml"
    path.write_text(config_toml(config))
    again = resolve_config({}, config_path=path, env={})
    assert again == config  # `mnist-study run --config resolved.toml` reruns the same setting


def test_resolved_config_hides_storage_passwords() -> None:
    text = config_toml(StudyConfig(storage="postgresql://ann:s3cret@db.example/optuna"))
    assert "s3cret" not in text and "postgresql://ann:***@db.example/optuna" in text


def _tiny_study() -> optuna.Study:
    study = optuna.create_study(study_name="tiny")

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        trial.suggest_categorical("optimizer", ["sgd", "adam"])
        for step in (1, 2):
            trial.report(lr / step, step)
        return lr

    study.optimize(objective, n_trials=3)
    return study


def _study_with_one_complete_trial(run_id: str) -> optuna.Study:
    study = optuna.create_study()
    dist = optuna.distributions
    study.add_trial(optuna.trial.create_trial(
        params={"lr": 1e-3, "optimizer": "adam", "batch_size": 32, "dropout": 0.0,
                "weight_decay": 1e-6, "scheduler": "none"},
        distributions={
            "lr": dist.FloatDistribution(1e-4, 1e-1, log=True),
            "optimizer": dist.CategoricalDistribution(["adam"]),
            "batch_size": dist.CategoricalDistribution([32]),
            "dropout": dist.FloatDistribution(0.0, 0.5),
            "weight_decay": dist.FloatDistribution(1e-6, 1e-3, log=True),
            "scheduler": dist.CategoricalDistribution(["none"])},
        value=0.5, user_attrs={"mlflow_run_id": run_id}))
    return study


def _restored(study: optuna.Study) -> Restored:
    return Restored(trial=study.best_trial, models=(models.build("mlp", hidden=16),))


SCORE = Evaluation(trial_number=0, test_loss=1.0, test_acc=0.5, restored_val_loss=0.5)


def test_without_tracking_nothing_is_registered(search_data: SearchData) -> None:
    study = _study_with_one_complete_trial("untracked-0")
    uri = publish_study(study, config=StudyConfig(hidden=16), data=search_data, test=SCORE,
                        restored=_restored(study), tracker=NullTracker())
    assert uri == ""  # no registry without tracking, and no error either


def test_a_cross_validated_study_publishes_its_report_and_config_but_no_model(
    synthetic_files: MnistFiles, tmp_path: Path,
) -> None:
    folds = prepare_search_data(synthetic_files, val_fraction=0.25, seed=0, cv_folds=3,
                                device=torch.device("cpu"))
    tracker = MlflowTracker(f"sqlite:///{tmp_path}/mlflow.db")
    tracker.start_study(study_name="cv", params={}, tags={})
    study = _study_with_one_complete_trial("cv-0")
    uri = publish_study(study, config=StudyConfig(hidden=16, cv_folds=3), data=folds,
                        test=SCORE, restored=_restored(study), tracker=tracker)
    tracker.end_study(status="FINISHED")
    assert uri == ""  # K fold models are no one model to register
    client = tracker.client
    artifacts = _artifact_paths(client, tracker.parent_run_id)
    assert {REPORT_PATH, CONFIG_PATH} <= artifacts
    assert client.search_registered_models() == []


def _artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


@dataclass(frozen=True)
class Published:
    config: StudyConfig
    summary: StudySummary
    files: MnistFiles
    normalizer: Normalizer  # the study's (train-only) normalisation


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Published:
    """One small study run end to end, shared by the tests of what it published."""
    root = tmp_path_factory.mktemp("published")
    data_dir = write_synthetic_mnist(root / "mnist", n_train=STUDY_TRAIN_IMAGES)
    config = StudyConfig(study_name="pub test", storage=f"sqlite:///{root}/optuna.db",
                         tracking_uri=f"sqlite:///{root}/mlflow/mlflow.db", data_dir=data_dir,
                         download=False, allow_noncanonical_data=True, n_trials=2, max_epochs=2,
                         hidden=16, val_fraction=0.25, device="cpu", no_progress=True)
    files = find_mnist(data_dir, verify=False)
    assert files is not None
    search = prepare_search_data(files, val_fraction=config.val_fraction, seed=config.seed,
                                 device=torch.device("cpu"))
    return Published(config=config, summary=evaluated_here(config), files=files,
                     normalizer=search.normalizers[0])


def _normalised_test_images(published: Published, normalizer: Normalizer) -> TensorSet:
    test = published.files.load("test")
    return to_tensor_set(test.images, test.labels, normalizer, torch.device("cpu"))


def test_run_publishes_artifacts_and_a_model_that_reproduces_test_accuracy(
    published: Published, monkeypatch: pytest.MonkeyPatch,
) -> None:
    uri, summary = published.config.tracking_uri, published.summary
    client = MlflowClient(uri)
    parent = client.get_run(summary.mlflow_parent_run_id)
    artifacts = _artifact_paths(client, parent.info.run_id)
    assert REPORT_PATH in artifacts  # the study report, in place of four 4.6 MB plot files
    assert not any(path.startswith("plots/") for path in artifacts)
    # The split/leakage summary (the audit, its closest pairs drawn) and the resolved config.
    assert {"audit/audit.json", "audit/audit.md", "audit/closest_pairs.png",
            CONFIG_PATH} <= artifacts
    assert parent.data.tags["registered_model"] == "models:/mnist-study-pub-test/1"

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # models:/ URIs resolve through it
    model_uri = "models:/mnist-study-pub-test/latest"
    info = mlflow.models.get_model_info(model_uri)
    assert info.signature is not None and info.saved_input_example_info is not None
    assert info.metadata is not None  # the normaliser travels with the model
    model = mlflow.pyfunc.load_model(model_uri).unwrap_python_model().model
    assert isinstance(model, models.MLP) and not model.training  # the nn.Module, eval mode
    normalizer = Normalizer(mean=info.metadata["normalizer_mean"],
                            std=info.metadata["normalizer_std"])
    loss, acc = evaluate(model, _normalised_test_images(published, normalizer))
    assert acc == summary.test.test_acc  # the registered model IS the evaluated one, exactly
    assert loss == summary.test.test_loss
    assert info.metadata["test_accuracy"] == summary.test.test_acc  # and says so itself


# Run in a fresh process, as a user would: the model loads with pickle forbidden.
LOAD_WITHOUT_PICKLE = """
import sys
import mlflow
import numpy as np

model = mlflow.pyfunc.load_model(sys.argv[1])
np.save(sys.argv[3], model.predict(np.load(sys.argv[2])))
network = model.unwrap_python_model().model
print(type(network).__name__, "training" if network.training else "eval")
"""


def test_registered_model_loads_and_predicts_with_pickle_forbidden(
    published: Published, tmp_path: Path,
) -> None:
    config = published.config
    tracker = MlflowTracker(config.tracking_uri)
    study = optuna.load_study(study_name=config.study_name, storage=config.storage)
    restored = restore_best(study, k=1, tracker=tracker, model_name=config.model,
                            model_kwargs={"hidden": config.hidden}, device=torch.device("cpu"))
    evaluated = restored.models[0]  # the model the final evaluation scored, in this process
    images = _normalised_test_images(published, published.normalizer).x  # [100, 1, 28, 28]
    np.save(tmp_path / "images.npy", images.numpy())
    done = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_PICKLE, "models:/mnist-study-pub-test/latest",
         str(tmp_path / "images.npy"), str(tmp_path / "logits.npy")],
        env={**os.environ, "MLFLOW_TRACKING_URI": config.tracking_uri,
             "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"},
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]  # pickle forbidden, and it still loads
    assert done.stdout.split() == ["MLP", "eval"]  # the nn.Module itself, dropout off
    with torch.inference_mode():
        expected = evaluated(images).numpy()
    # Another process, with its own intra-op thread count and so its own order of the sums in
    # each matrix product: float32 logits agree to rounding (about 1e-6 here), not to the bit.
    # A model other than the evaluated one would miss by whole units.
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), expected, rtol=1e-5, atol=1e-5)


def test_run_logs_one_offline_report_with_every_section(published: Published,
                                                        tmp_path: Path) -> None:
    from study.report.html import SECTIONS

    client = MlflowClient(published.config.tracking_uri)
    path = Path(client.download_artifacts(published.summary.mlflow_parent_run_id, REPORT_PATH,
                                          str(tmp_path)))
    html = path.read_text()
    assert path.stat().st_size < 6_000_000  # plotly.js once (4.8 MB), figures small
    assert html.count("plotly.js v") == 1  # embedded once, not per figure
    body = html.split("</head>", 1)[1]  # what the report adds to plotly.js
    fetched = "src=\"http" in body or "<link" in body
    assert not fetched  # nothing fetched: it opens offline (the browser test proves it)
    missing = [s for s in SECTIONS if f'<section id="{s}">' not in body]
    assert missing == []
    test = published.summary.test
    interval = f"{test.test_acc:.2%} (95% CI" in body
    assert interval  # the evaluation just made, with its interval
    assert "data:image/png;base64," in body  # the audit's closest pairs, inline


def test_the_report_command_writes_the_same_report_from_the_stores(
    published: Published, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    from study.cli import main

    config = published.config
    out = tmp_path / "report.html"
    code = main(["report", "--study-name", config.study_name, "--storage", config.storage,
                 "--tracking-uri", config.tracking_uri, "--output", str(out)])
    assert code == 0 and f"wrote {out}" in capsys.readouterr().out
    body = out.read_text().split("</head>", 1)[1]
    stored = "(95% CI" in body
    assert stored  # the stored result: the test set is not read again
    curves = 'id="curves"' in body and '"train_loss"' in body
    assert curves  # curves from the MLflow runs


def test_the_report_command_reads_the_stores_without_torch(
    published: Published, tmp_path: Path,
) -> None:
    # A 3-line attribute and the MLflow runs: reading them needs no torch (seconds of imports,
    # once, through the baseline's trainer and the trackers' tensors). scikit-learn still
    # loads: optuna.importance imports it for its fANOVA evaluator wherever it is installed.
    config, out = published.config, tmp_path / "report.html"
    args = ["report", "--study-name", config.study_name, "--storage", config.storage,
            "--tracking-uri", config.tracking_uri, "--output", str(out)]
    code = f"""
import sys
from study.cli import main
code = main({args!r})
print(code, [m for m in ("torch",) if m in sys.modules])
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.splitlines()[-1] == "0 []", done.stderr[-2000:]
    assert 'id="curves"' in out.read_text()  # the whole report, curves from MLflow included


@pytest.mark.parametrize("case", ["no storage", "no study"])
def test_the_report_command_names_what_is_missing(published: Published, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  case: str) -> None:
    from study.cli import main

    storage = (f"sqlite:///{tmp_path}/none.db" if case == "no storage"
               else published.config.storage)
    code = main(["report", "--study-name", "nope", "--storage", storage,
                 "--output", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1  # one clear line
    assert ("no study storage at" in err) if case == "no storage" else \
        ("no study 'nope'" in err and "pub test" in err)  # lists the studies there
    assert not (tmp_path / "none.db").exists() and not (tmp_path / "r.html").exists()
