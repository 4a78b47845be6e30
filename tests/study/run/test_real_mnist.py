"""The real MNIST: README's first command (a two-minute budget) and trials that must learn."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from tests.helpers import cli_env


@pytest.mark.slow
def test_the_first_command_s_two_minute_study_reaches_98_3_percent_on_the_test_set(
    tmp_path: Path, real_mnist_dir: Path
) -> None:
    # README's first command: a two-minute budget, no other flag.
    result = subprocess.run(
        [sys.executable, "-m", "study", "run", "--timeout", "2m",
         "--data-dir", str(real_mnist_dir), "--device", "cpu", "--no-progress"],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    print(result.stdout)  # the summary, kept in the CI log
    print(result.stderr[-4000:])  # the plan line and the trials
    match = re.search(r"TEST accuracy\s+([\d.]+)%", result.stdout)
    assert match is not None
    # The bar sits where the study clears it on any CPU, not at what one machine printed:
    # the warm start's best known recipe alone scored 98.87-98.98% here (seed 0, 40 epochs in
    # about a minute; the fast start before it, 98.54%), and the 10-minute budget benchmark's
    # seeds are in README's Performance. On a loaded machine (a CI run measured 3.5 s an
    # epoch, not 1.3) two minutes hold only part of that trial, which then ends at the
    # deadline with its best epoch so far, or the fast start is the best: 98.3% leaves room
    # for that, and is still above any study of the old 8-epoch default (97.72-98.15%).
    assert float(match.group(1)) >= 98.3
    assert re.search(r"2 min budget: rungs at 2, 6, 18 of 40 epochs, about \d+ trials",
                     result.stderr)

    study = optuna.load_study(study_name="mnist", storage=f"sqlite:///{tmp_path}/optuna.db")
    # The warm start's three recipes, then the search: 7 trials on an idle 2-core machine. On
    # a loaded one (CI runs two test workers beside it) the fast start and the best known
    # recipe's 40 epochs can fill the two minutes; the seed recipe then waits, enqueued, for
    # the next run.
    ran = [t for t in study.trials if t.state != TrialState.WAITING]
    assert len(study.trials) >= 2 and len(ran) >= 1
    assert all(t.state.is_finished() for t in ran)  # nothing left RUNNING
    # Successive halving stopped some at a rung, where a third trial reached one.
    assert TrialState.PRUNED in {t.state for t in ran} or len(ran) < 3
    spans = [(t.datetime_complete - t.datetime_start).total_seconds() for t in ran
             if t.datetime_complete is not None and t.datetime_start is not None]
    assert len(spans) == len(ran)
    assert sum(spans) < 120  # one at a time, inside the budget
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow/mlflow.db")
    for trial in ran:
        history = client.get_metric_history(trial.user_attrs["mlflow_run_id"], "val_loss")
        assert len(history) == trial.user_attrs["epochs_trained"]  # per-epoch history


@pytest.mark.slow
@pytest.mark.parametrize(("augment", "norm"), [("affine", "none"), ("none", "batch")],
                         ids=["augmented", "batchnorm"])
def test_an_augmented_and_a_batchnorm_trial_learn_real_mnist(real_mnist_dir: Path,
                                                             augment: str, norm: str) -> None:
    import torch

    from data_pipeline import find_mnist, prepare_search_data
    from models import build
    from study.train.engine_types import Hyperparams
    from study.train.trial import train

    files = find_mnist(real_mnist_dir, verify=True)
    assert files is not None
    fold = prepare_search_data(files, val_fraction=0.1, seed=0,
                               device=torch.device("cpu")).fold(0)
    hp = Hyperparams(lr=3e-3, optimizer="adam", batch_size=128, dropout=0.1, weight_decay=1e-5,
                     scheduler="none", norm=norm, augment=augment,
                     augment_params={"aug_degrees": 10.0, "aug_translate": 0.05,
                                     "aug_scale": 0.05} if augment != "none" else {})
    torch.manual_seed(0)
    model = build("mlp", norm=norm, dropout=hp.dropout)
    metrics = list(train(model, hp, fold, max_epochs=2,
                         generator=torch.Generator().manual_seed(0)))
    print([(m.train_acc, m.val_acc) for m in metrics])
    assert metrics[-1].val_acc >= 0.96  # a working trial: the seed MLP reaches ~0.97 in 2
