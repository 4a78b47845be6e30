"""The issue's acceptance run on the real MNIST: 20 trials x 8 epochs of the seed MLP on CPU."""

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
def test_twenty_trial_mlp_study_reaches_97_5_percent_on_the_test_set(
    tmp_path: Path, real_mnist_dir: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "study", "run", "--n-trials", "20", "--max-epochs", "8",
         "--data-dir", str(real_mnist_dir), "--device", "cpu", "--no-progress"],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    print(result.stdout)  # the summary, kept in the CI log
    match = re.search(r"TEST accuracy\s+([\d.]+)%", result.stdout)
    assert match is not None
    # The bar sits where the study clears it on any CPU, not at what one machine printed.
    # Seeds 0-3 gave 97.83, 98.00, 98.15 and 98.08% on one 2-core CPU, and seed 0 97.72% on
    # another (float sums differ between CPUs, so another CPU is another draw): mean 97.96%,
    # sd 0.18 points, which holds the binomial error of 10,000 test images (0.14 points at
    # 98%). 97.5% is 2.6 sd under the mean and 0.2 points under the worst of the five.
    assert float(match.group(1)) >= 97.5

    study = optuna.load_study(study_name="mnist", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert len(study.trials) == 20  # exactly the requested trials
    states = [t.state for t in study.trials]
    assert TrialState.PRUNED in states  # the default median pruner stopped some
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow/mlflow.db")
    for trial in study.trials:
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
    from study.search_space import Hyperparams
    from study.training import train

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
