"""What a finished `run` leaves on its MLflow parent run for people to browse and reuse.

Artifacts: the study report (one self-contained HTML file, study/report/html.py) and the
resolved config; and, for a holdout study, the best trial's restored model, logged as code
plus weights (no pickle) and registered. A cross-validated trial has K fold models, not one:
none is registered.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna

import models
from data_pipeline import SearchData
from study.config import StudyConfig
from study.run.evaluation import Restored
from study.run.objective import model_kwargs
from study.search.search_space import hyperparams_from_params
from study.store.redaction import redact
from study.store.result import Evaluation
from study.tracking import Tracker

logger = logging.getLogger(__name__)

REPORT_PATH = "report.html"
CONFIG_PATH = "config/resolved_config.toml"
INPUT_EXAMPLE_SIZE = 2  # images in the model's input example: enough to show the batch axis
# The file MLflow runs to load the registered model (a path: importing it would register it).
MODEL_CODE = Path(__file__).with_name("registered_model.py")


def registered_model_name(study_name: str) -> str:
    """The model registry name of a study: 'mnist-study-' + the name, in safe characters."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", study_name).strip("-.")
    return f"mnist-study-{safe or 'study'}"


def publish_study(
    study: optuna.Study, *, config: StudyConfig, data: SearchData, test: Evaluation,
    restored: Restored, tracker: Tracker,
) -> str:
    """Log the report and the resolved config; register the best model of a holdout study.

    Returns the registered model's URI ("" when none is). The split/leakage summary is the
    audit's (audit/audit.json and audit.md), logged by the runner before the search.
    """
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_study_report(study, config=config, test=test, tracker=tracker,
                           path=root / REPORT_PATH)
        _write(root / CONFIG_PATH, config_toml(config))
        tracker.log_study_artifacts(root)
    if data.k > 1:
        logger.info("cross-validated study: report and config logged; no model registered (a "
                    "trial has %d fold models)", data.k)
        return ""
    uri = log_best_model(study, config=config, data=data, test=test, restored=restored,
                         tracker=tracker)
    if uri:
        logger.info("best model of trial %d registered as %s", test.trial_number, uri)
        tracker.log_study_result(metrics={}, params={}, tags={"registered_model": uri})
    return uri


def write_study_report(study: optuna.Study, *, config: StudyConfig, test: Evaluation,
                       tracker: Tracker, path: Path) -> None:
    """The study report, with the evaluation just made (the study stores it only after)."""
    from study.report.data import collect
    from study.report.html import write_report

    result = {"best_trial": test.trial_number, "test": dataclasses.asdict(test),
              "mlflow_parent_run_id": tracker.parent_run_id}
    data = collect(study, storage=config.storage, client=tracker.reader(), result=result)
    size = write_report(data, path, thresholds=config.diagnosis)
    logger.info("study report: %s in the parent run (%.1f MB)", REPORT_PATH, size / 1e6)


def config_toml(config: StudyConfig) -> str:
    """CONFIG as a file `mnist-study run --config` accepts. Passwords in URLs are redacted."""
    values = config.to_dict()
    space = values.pop("search_space")
    diagnosis = values.pop("diagnosis")
    values["storage"] = redact(values["storage"])
    values["tracking_uri"] = redact(values["tracking_uri"])
    lines = ["# Resolved by mnist-study: every setting of this run, defaults included."]
    lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()
              if value is not None]  # TOML has no null: an unset timeout is left out
    lines += ["", "[search_space]"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in space.items()]
    lines += ["", "[diagnosis]"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in diagnosis.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot write a non-finite float to TOML, but got {value=}")
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    # A JSON string is a valid TOML basic string (same quotes, same escapes).
    return json.dumps(str(value))


def log_best_model(
    study: optuna.Study, *, config: StudyConfig, data: SearchData, test: Evaluation,
    restored: Restored, tracker: Tracker,
) -> str:
    """The best trial's restored weights as a registered MLflow model (CPU, eval mode).

    Logged as code (study/run/registered_model.py and the models package) plus a
    state-dict file, so loading it unpickles nothing: see registered_model.py.
    """
    # A CPU copy in eval mode (dropout off): the logged model predicts what the test saw.
    model = copy.deepcopy(restored.models[0]).to("cpu").eval()
    example = data.fold(0).val.x[:INPUT_EXAMPLE_SIZE].cpu().numpy()  # [2, 1, 28, 28] float32
    # The arguments the restored network was built with: the loader rebuilds the same one.
    architecture = {"model": config.model, **model_kwargs(config),
                    **hyperparams_from_params(restored.trial.params).model_kwargs()}
    return tracker.log_study_model(
        model, registered_name=registered_model_name(config.study_name), input_example=example,
        params=hyperparams_from_params(study.best_params).as_params(),
        metadata=model_metadata(config=config, data=data, test=test),
        model_code=MODEL_CODE, model_config=architecture,
        # The models package travels with the model, so it loads without mnist-study.
        code_paths=[Path(models.__file__).parent],
    )


def model_metadata(*, config: StudyConfig, data: SearchData,
                   test: Evaluation) -> Mapping[str, Any]:
    """What a user of the registered model needs: how to prepare its input, what it scored."""
    return {
        "study_name": config.study_name,
        "trial_number": test.trial_number,
        "test_accuracy": test.test_acc,
        "test_loss": test.test_loss,
        "input": "MNIST images as float32 [N, 1, 28, 28]: pixel / 255, minus normalizer_mean, "
                 "divided by normalizer_std; output: [N, 10] logits",
        "normalizer_mean": data.normalizers[0].mean,
        "normalizer_std": data.normalizers[0].std,
        "data_fingerprint": data.data_fingerprint,
        "split_fingerprint": data.split_fingerprint,
    }


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
