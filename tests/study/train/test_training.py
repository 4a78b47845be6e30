from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import optuna
import pytest
import torch
from torch.nn import functional as F

from data_pipeline import Fold, SearchData
from data_pipeline.tensors import shuffled_batches
from models import build
from study.train import training
from study.train.cohort.engine import Cohort
from study.train.engine_types import EpochMetrics, Hyperparams, TrainOptions
from study.train.training import (
    NonFiniteLossError,
    build_optimizer,
    evaluate,
    set_cpu_threads,
)
from study.train.trial import train
from tests.study.train.plain_loop import plain_train

EPOCHS = 4


def _hp(**overrides: Any) -> Hyperparams:
    base: dict[str, Any] = {"lr": 1e-2, "optimizer": "adam", "batch_size": 64, "dropout": 0.0,
                            "weight_decay": 0.0, "scheduler": "none"}
    return Hyperparams(**{**base, **overrides})


@pytest.fixture
def fold(search_data: SearchData) -> Fold:
    """The holdout fold of the synthetic data: what train() takes."""
    return search_data.fold(0)


def _run(hp: Hyperparams, data: Fold, *, epochs: int = EPOCHS, seed: int = 0,
         model_name: str = "mlp") -> list[EpochMetrics]:
    torch.manual_seed(seed)
    model = build(model_name, hidden=32, dropout=hp.dropout)
    generator = torch.Generator().manual_seed(seed)
    return list(train(model, hp, data, max_epochs=epochs, generator=generator))


@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
def test_train_yields_one_metric_per_epoch(fold: Fold, model_name: str) -> None:
    epochs = 3 if model_name == "mlp" else 1
    metrics = _run(_hp(dropout=0.2), fold, epochs=epochs, model_name=model_name)
    assert [m.epoch for m in metrics] == list(range(1, epochs + 1))  # 1-based, every epoch
    for m in metrics:
        assert all(math.isfinite(v) for v in m.as_dict().values())  # every number finite
        assert 0.0 <= m.train_acc <= 1.0 and 0.0 <= m.val_acc <= 1.0  # accuracies are fractions
        assert m.train_loss > 0 and m.val_loss > 0  # cross-entropy is positive
        assert m.seconds >= 0  # wall time recorded
        assert m.lr == 1e-2  # no scheduler: the lr stays put
    layers = {"mlp": ["net.1", "net.4"], "cnn": ["features.0", "features.3", "head.1",
                                                 "head.4"]}[model_name]
    relus = {"mlp": ["net.2"], "cnn": ["features.1", "features.4", "head.2"]}[model_name]
    assert set(metrics[0].as_dict()) == {  # the names tracked per epoch
        "train_loss", "train_acc", "val_loss", "val_acc", "lr_now", "epoch_seconds", "loss_gap",
        "grad_norm", "update_ratio", "dead_relu",
        *(f"{signal}/{layer}" for signal in ("grad_norm", "update_ratio") for layer in layers),
        *(f"dead_relu/{relu}" for relu in relus)}


def test_loss_goes_down(fold: Fold) -> None:
    metrics = _run(_hp(lr=1e-2), fold, epochs=EPOCHS)
    assert metrics[-1].train_loss < metrics[0].train_loss  # training loss falls
    assert metrics[-1].val_loss < metrics[0].val_loss  # and generalises to validation
    assert metrics[-1].val_acc > 0.8  # the synthetic classes are easy to learn


def test_train_is_lazy(fold: Fold) -> None:
    torch.manual_seed(0)
    model = build("mlp", hidden=32)
    epochs = train(model, _hp(), fold, max_epochs=1000,
                   generator=torch.Generator().manual_seed(0))
    assert next(epochs).epoch == 1
    after_one = [p.detach().clone() for p in model.parameters()]
    # Nothing trains until the caller asks for the next epoch: pruning is just stopping.
    assert all(torch.equal(a, p) for a, p in zip(after_one, model.parameters(), strict=True))
    assert next(epochs).epoch == 2
    assert not all(torch.equal(a, p) for a, p in zip(after_one, model.parameters(), strict=True))


def _expected_lrs(scheduler: str, lr: float, params: Mapping[str, float]) -> list[float] | None:
    ks = range(EPOCHS)  # epoch k+1 trains with the lr left by k epoch steps
    if scheduler == "none":
        return [lr] * EPOCHS
    if scheduler == "step":
        return [lr * params["step_gamma"] ** (k // int(params["step_size"])) for k in ks]
    if scheduler == "exponential":
        return [lr * params["exp_gamma"] ** k for k in ks]
    if scheduler == "cosine":
        return [lr * (1 + math.cos(math.pi * k / EPOCHS)) / 2 for k in ks]
    return None  # plateau and onecycle are checked by shape below


SCHEDULES: dict[str, dict[str, float]] = {
    "none": {},
    "step": {"step_size": 2, "step_gamma": 0.5},
    "cosine": {},
    "plateau": {"plateau_factor": 0.5, "plateau_patience": 0},
    "onecycle": {"onecycle_pct_start": 0.3},
    "exponential": {"exp_gamma": 0.8},
}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("scheduler", sorted(SCHEDULES))
def test_every_scheduler_runs(fold: Fold, scheduler: str, optimizer: str) -> None:
    lr = 1e-2
    hp = _hp(lr=lr, optimizer=optimizer, scheduler=scheduler, scheduler_params=SCHEDULES[scheduler],
             momentum=0.9 if optimizer == "sgd" else None)
    # batch 64 over 300 images: 5 steps an epoch, the last one short.
    metrics = _run(hp, fold, epochs=EPOCHS)
    assert len(metrics) == EPOCHS  # all epochs run (OneCycle would raise if over-stepped)
    lrs = [m.lr for m in metrics]
    expected = _expected_lrs(scheduler, lr, SCHEDULES[scheduler])
    if expected is not None:
        assert lrs == pytest.approx(expected, abs=1e-12)  # stepped once per epoch
    elif scheduler == "plateau":
        # Only ever cut by the factor, never raised.
        assert all(b <= a for a, b in zip(lrs, lrs[1:], strict=False))
        assert all(round(math.log(v / lr, 0.5), 6).is_integer() for v in lrs)
    else:  # onecycle: one step per batch, 5 an epoch
        expected = _onecycle_lrs(lr, SCHEDULES["onecycle"]["onecycle_pct_start"],
                                 epochs=EPOCHS, steps_per_epoch=5)
        assert lrs == pytest.approx(expected, rel=1e-9)  # the per-batch schedule, in step
        assert max(lrs) > 2 * lr / 25  # warmed up above the initial lr / 25


def test_plateau_cuts_lr_when_val_loss_stalls(fold: Fold) -> None:
    # An lr so small that the validation loss cannot improve by the 1e-4 threshold.
    hp = _hp(lr=1e-6, optimizer="sgd", scheduler="plateau",
             scheduler_params={"plateau_factor": 0.5, "plateau_patience": 0})
    lrs = [m.lr for m in _run(hp, fold, epochs=3)]
    # Epoch 1 sets the best loss; each stalled epoch after it halves the next epoch's lr.
    assert lrs == pytest.approx([1e-6, 1e-6, 5e-7], rel=1e-9)


def _onecycle_lrs(lr: float, pct_start: float, *, epochs: int,
                  steps_per_epoch: int) -> list[float]:
    """The lr of each epoch's last batch when a OneCycleLR is stepped once per batch."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch,
        pct_start=pct_start)
    lrs = []
    for _ in range(epochs):
        for _ in range(steps_per_epoch):
            last_batch_lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            schedule.step()
        lrs.append(last_batch_lr)
    return lrs


@pytest.mark.parametrize("batch_size", [32, 300])
def test_onecycle_steps_per_batch(fold: Fold, batch_size: int) -> None:
    hp = _hp(lr=1e-2, batch_size=batch_size, scheduler="onecycle",
             scheduler_params={"onecycle_pct_start": 0.25})
    lrs = [m.lr for m in _run(hp, fold, epochs=3)]
    steps = math.ceil(300 / batch_size)  # 10 steps an epoch (last one short), or 1
    # The lr follows OneCycle stepped once per batch, for exactly epochs * steps steps.
    assert lrs == pytest.approx(_onecycle_lrs(1e-2, 0.25, epochs=3, steps_per_epoch=steps),
                                rel=1e-9)


@pytest.mark.parametrize(
    ("optimizer", "cls"),
    [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)],
)
def test_build_optimizer(optimizer: str, cls: type[torch.optim.Optimizer]) -> None:
    model = build("mlp", hidden=8)
    momentum = 0.85 if optimizer == "sgd" else None
    opt = build_optimizer(model, _hp(lr=3e-3, optimizer=optimizer, weight_decay=1e-4,
                                     momentum=momentum))
    assert type(opt) is cls  # the named optimizer class
    group = opt.param_groups[0]
    assert group["lr"] == 3e-3 and group["weight_decay"] == 1e-4  # with the given settings
    if optimizer == "sgd":
        assert group["momentum"] == 0.85  # SGD gets its momentum
    # It optimises every parameter of the model.
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == sum(
        p.numel() for p in model.parameters())


def test_build_optimizer_sgd_without_momentum() -> None:
    opt = build_optimizer(build("mlp", hidden=8), _hp(optimizer="sgd", momentum=None))
    assert opt.param_groups[0]["momentum"] == 0.0  # plain SGD when no momentum is given


def test_build_optimizer_unknown() -> None:
    # An unknown optimizer name is a ValueError naming it.
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        build_optimizer(build("mlp", hidden=8), _hp(optimizer="rmsprop"))


@pytest.mark.parametrize("eval_batch", [training.EVAL_BATCH_SIZE, 7])
def test_evaluate_matches_direct_computation(
    fold: Fold, monkeypatch: pytest.MonkeyPatch, eval_batch: int
) -> None:
    monkeypatch.setattr(training, "EVAL_BATCH_SIZE", eval_batch)  # 7: many uneven slices
    torch.manual_seed(0)
    model = build("mlp", hidden=32, dropout=0.5)
    loss, acc = evaluate(model, fold.val)
    model.eval()
    with torch.no_grad():
        logits = model(fold.val.x)
        direct_loss = F.cross_entropy(logits, fold.val.y).item()
        n_correct = int((logits.argmax(dim=1) == fold.val.y).sum())
    assert loss == pytest.approx(direct_loss, rel=1e-5)  # the mean loss over all examples
    assert acc == n_correct / len(fold.val)  # the fraction classified correctly
    assert not model.training  # evaluation runs without dropout
    assert evaluate(model, fold.val) == (loss, acc)  # and is repeatable


@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
def test_a_batchnorm_model_s_validation_loss_does_not_depend_on_the_evaluation_batch(
    fold: Fold, monkeypatch: pytest.MonkeyPatch, model_name: str,
) -> None:
    torch.manual_seed(0)
    model = build(model_name, hidden=32, norm="batch")
    hp = _hp(norm="batch")
    next(iter(train(model, hp, fold, max_epochs=1, generator=torch.Generator().manual_seed(0))))
    scores = []
    for eval_batch in (training.EVAL_BATCH_SIZE, 50, 7):  # whole set, slices, uneven slices
        monkeypatch.setattr(training, "EVAL_BATCH_SIZE", eval_batch)
        scores.append(evaluate(model, fold.val))
    # Evaluated in eval mode: the running statistics, never the batch's own, normalise.
    assert [s[0] for s in scores] == pytest.approx([scores[0][0]] * 3, rel=1e-5)
    assert [s[1] for s in scores] == [scores[0][1]] * 3
    model.train()
    with torch.no_grad():  # in train mode the batch's statistics would: the losses differ
        assert F.cross_entropy(model(fold.val.x[:7]), fold.val.y[:7]).item() != \
            pytest.approx(F.cross_entropy(model.eval()(fold.val.x[:7]), fold.val.y[:7]).item())


def test_nan_input_raises_non_finite(fold: Fold) -> None:
    fold.train.x[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="train loss became nan in epoch 1") as info:
        _run(_hp(), fold, epochs=3)
    # A NaN in the inputs stops training in the first epoch, with the epoch recorded.
    assert info.value.epoch == 1


def test_divergence_names_the_later_epoch(fold: Fold) -> None:
    torch.manual_seed(0)
    epochs = train(build("mlp", hidden=32), _hp(), fold, max_epochs=3,
                   generator=torch.Generator().manual_seed(0))
    assert next(epochs).epoch == 1  # the first epoch is fine
    fold.val.x[3] = float("inf")  # tensors are mutable: poison validation now
    with pytest.raises(NonFiniteLossError, match="validation loss became nan in epoch 2") as info:
        next(epochs)
    assert info.value.epoch == 2  # the failing epoch is the one reported


def test_absurd_lr_diverges(fold: Fold) -> None:
    hp = _hp(lr=1e12, optimizer="sgd", momentum=0.99)
    # A runaway lr is reported as divergence, never as metrics full of NaN.
    with pytest.raises(NonFiniteLossError, match=r"loss became (nan|inf|-inf) in epoch \d+"):
        _run(hp, fold, epochs=5)


def _numbers(metrics: list[EpochMetrics]) -> list[dict[str, float]]:
    return [{k: v for k, v in dataclasses.asdict(m).items() if k != "seconds"} for m in metrics]


def test_bit_identical_on_cpu(fold: Fold) -> None:
    hp = _hp(lr=5e-3, dropout=0.3, scheduler="cosine")
    first = _numbers(_run(hp, fold, epochs=3, seed=4))
    second = _numbers(_run(hp, fold, epochs=3, seed=4))
    # Same seeds, same device: exactly the same numbers (== on floats, not approx).
    assert first == second
    # The seed is not ignored: another one gives another run.
    assert _numbers(_run(hp, fold, epochs=3, seed=5)) != first



@pytest.mark.parametrize(("name", "overrides"), [
    ("mlp", {"optimizer": "adam", "dropout": 0.3}),
    ("mlp", {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "dropout": 0.2,
             "scheduler": "onecycle", "scheduler_params": {"onecycle_pct_start": 0.3}}),
    ("mlp", {"optimizer": "adamw", "dropout": 0.3, "augment": "affine",
             "augment_params": {"aug_degrees": 10.0, "aug_translate": 0.1, "aug_scale": 0.1}}),
    ("cnn", {"optimizer": "adamw", "dropout": 0.5, "norm": "batch", "scheduler": "plateau",
             "scheduler_params": {"plateau_factor": 0.5, "plateau_patience": 0}}),
])
def test_a_lone_trial_is_the_plain_pytorch_loop(fold: Fold, name: str,
                                                overrides: dict[str, Any]) -> None:
    """One engine: a lone trial is a cohort of one, and it reaches exactly the weights of the
    textbook loop (torch's optimizer, scheduler and nn.Dropout) on this machine."""
    hp = _hp(**overrides)

    def model() -> torch.nn.Module:
        torch.manual_seed(3)  # the weights, then the dropout masks
        return build(name, hidden=16, **hp.model_kwargs())

    alone = model()
    metrics = list(train(alone, hp, fold, max_epochs=3, generator=torch.Generator().manual_seed(3)))
    plain = model()
    val_losses = plain_train(plain, hp, fold, max_epochs=3,
                             generator=torch.Generator().manual_seed(3))
    for key, tensor in plain.state_dict().items():
        assert torch.equal(alone.state_dict()[key], tensor), key
    # The recorded losses sum the same terms in another order: equal to float rounding.
    assert [m.val_loss for m in metrics] == pytest.approx(val_losses, rel=1e-6)

# --- speed options: bf16 autocast, torch.compile, fused optimizers, CPU threads -------------
# GPU paths, exercised on the CPU: autocast works on both devices. Compiled tests run Dynamo
# and AOTAutograd through torch's "aot_eager" backend, exactly as Inductor would trace, without
# generating and building C++ (minutes on these cores): the one thing swapped is the backend.

COMPILED = TrainOptions(compile_mode="default")


@pytest.fixture
def aot_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", functools.partial(compile_, backend="aot_eager"))


def test_bf16_autocast_trains_in_bf16_and_evaluates_in_fp32(fold: Fold) -> None:
    torch.manual_seed(0)
    model = build("mlp", hidden=32)
    seen: list[torch.dtype] = []
    model.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    metrics = list(train(model, _hp(), fold, max_epochs=EPOCHS,
                         generator=torch.Generator().manual_seed(0),
                         options=TrainOptions(amp="bf16")))
    assert torch.bfloat16 in seen  # the training forward ran under bf16 autocast
    assert seen[-1] == torch.float32  # the last forward, validation, ran in fp32
    assert metrics[-1].train_loss < metrics[0].train_loss  # and it still learns
    # The recorded validation numbers are the fp32 ones a restored checkpoint reproduces.
    assert (metrics[-1].val_loss, metrics[-1].val_acc) == evaluate(model, fold.val)


def test_compiled_graphs_are_reused_by_later_trials(fold: Fold, aot_eager: None) -> None:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    graphs: list[int] = []
    for dropout, batch_size in ((0.1, 32), (0.3, 64), (0.0, 128)):
        model = build("mlp", hidden=32, dropout=dropout)
        keys = set(model.state_dict())
        metrics = list(train(model, _hp(dropout=dropout, batch_size=batch_size), fold,
                             max_epochs=2, generator=torch.Generator().manual_seed(0),
                             options=COMPILED))
        graphs.append(counters["stats"]["unique_graphs"])
        assert all(math.isfinite(m.val_loss) for m in metrics)
        assert set(model.state_dict()) == keys  # checkpoints keep the eager model's keys
    # One graph for training and one for evaluation, compiled by the first trial only:
    # another dropout rate or batch size is not a recompilation.
    assert graphs[0] == graphs[-1] == 2


def test_compiled_dropout_keeps_the_rate(fold: Fold, aot_eager: None) -> None:
    model = build("mlp", hidden=64, dropout=0.5)
    training.compile_for_trials(model, COMPILED)
    dropout = next(m for m in model.modules() if "Dropout" in type(m).__name__)
    x = torch.ones(4000, 64)
    dropout.train()
    kept = dropout(x)
    assert 0.45 < (kept == 0).float().mean().item() < 0.55  # about half dropped
    assert kept.sum().item() == pytest.approx(x.sum().item(), rel=0.05)  # and rescaled
    dropout.eval()
    assert torch.equal(dropout(x), x)  # identity at evaluation


def test_fused_and_for_loop_optimizers_agree(fold: Fold) -> None:
    def weights(fused: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = build("mlp", hidden=32)
        hp = _hp(optimizer="adamw", weight_decay=1e-3)
        optimizer = build_optimizer(model, hp, fused=fused)
        generator = torch.Generator().manual_seed(0)
        for idx in shuffled_batches(len(fold.train), 64, generator, torch.device("cpu")):
            optimizer.zero_grad()
            F.cross_entropy(model(fold.train.x[idx]), fold.train.y[idx]).backward()
            optimizer.step()
        return [p.detach() for p in model.parameters()]

    # The fused kernel is a faster implementation of the same update.
    for a, b in zip(weights(True), weights(False), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert build_optimizer(build("mlp", hidden=8), _hp()).defaults["fused"] is True


def test_config_options_reach_every_train_call(search_data: SearchData) -> None:
    from study.config import StudyConfig
    from study.run.objective import make_objective
    from study.tracking import NullTracker
    from study.train import trial

    seen: list[TrainOptions] = []
    real = trial.Cohort

    def spy(*args: Any, options: TrainOptions, **kwargs: Any) -> Cohort:
        seen.append(options)
        return real(*args, options=options, **kwargs)

    config = StudyConfig(amp="bf16", max_epochs=1, hidden=8)
    objective = make_objective(config, search_data, NullTracker())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trial, "Cohort", spy)
        objective(optuna.trial.FixedTrial({"optimizer": "adam", "scheduler": "cosine",
                                           "lr": 1e-3, "batch_size": 64, "dropout": 0.0,
                                           "weight_decay": 1e-6, "norm": "none",
                                           "augment": "none"}))
    # --amp from the config reaches the engine explicitly, with no hidden global state.
    assert seen == [TrainOptions(amp="bf16")]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"amp": "fp16"}, "amp must be one of"),
    ({"compile_mode": "max"}, "compile_mode must be one of"),
])
def test_train_options_are_validated(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainOptions(**kwargs)  # type: ignore[arg-type]


def test_set_cpu_threads() -> None:
    before = torch.get_num_threads()
    try:
        set_cpu_threads(2)
        assert torch.get_num_threads() == 2
        set_cpu_threads(0)  # 0 keeps whatever is set
        assert torch.get_num_threads() == 2
        set_cpu_threads(1)
        assert torch.get_num_threads() == 1
        with pytest.raises(ValueError, match="threads must be >= 0"):
            set_cpu_threads(-1)
    finally:
        torch.set_num_threads(before)
