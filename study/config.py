"""StudyConfig: every setting of a run, resolved once with precedence CLI > TOML > env > default."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models import MODELS
from study.diagnose.detectors import Thresholds
from study.errors import ConfigError
from study.search.plan import parse_duration
from study.search.search_space import SearchSpace
from study.search.strategy import PRUNERS, SAMPLERS
from study.train.engine_types import AMP_MODES, COMPILE_MODES

# Models, samplers, pruners (and schedulers, in SearchSpace) are checked against the registries
# that build them, all cheap to import: no second list of their names to forget here.
MATMUL_PRECISIONS = ("highest", "high", "medium")  # torch.set_float32_matmul_precision's
DEVICES = ("auto", "cpu", "cuda")  # and "cuda:N", the N-th visible GPU
_CUDA_INDEX = re.compile(r"cuda:(0|[1-9][0-9]*)")

DEFAULT_N_TRIALS = 30  # the trial budget when neither --n-trials nor --timeout is given
# --max-epochs when neither a flag nor the TOML file gives it: enough for each network to reach
# its ceiling under its warm-start recipe. A CNN epoch costs about 30 MLP epochs on a CPU, and
# its recipe's one-cycle schedule has converged by 20 (README, "Results on real MNIST").
DEFAULT_MAX_EPOCHS = {"mlp": 40, "cnn": 20}
DEFAULT_STORAGE = "sqlite:///optuna.db"
DEFAULT_TRACKING_URI = "sqlite:///mlflow/mlflow.db"
DEFAULT_DATA_DIR = Path.home() / ".cache" / "mnist-study"
# Settings that may come from the environment when neither a flag nor the TOML file sets them.
ENV_VARS = {"data_dir": "MNIST_STUDY_DATA_DIR", "tracking_uri": "MLFLOW_TRACKING_URI"}


@dataclass(frozen=True)
class StudyConfig:
    """One `mnist-study run`. Field names are the flag names (dashes become underscores)."""

    study_name: str = "mnist"
    storage: str = DEFAULT_STORAGE
    # The study's total across restarts, not per invocation; None: DEFAULT_N_TRIALS, unless a
    # timeout is given, when time alone is the budget (trial_limit).
    n_trials: int | None = None
    # This invocation's wall-time budget in seconds, from its start; the CLI and TOML also take
    # "10m", "1h" (study.search.plan.parse_duration). At the deadline running trials end with their
    # best epoch so far, and the best trial is evaluated.
    timeout: float | None = None
    # Long enough for the network to reach its ceiling (resolve_config takes the model's
    # DEFAULT_MAX_EPOCHS); successive halving (pruner "sha", rungs at 2, 6, 18 epochs) keeps
    # most trials short, early stopping ends the stale ones.
    max_epochs: int = DEFAULT_MAX_EPOCHS["mlp"]
    model: str = "mlp"
    hidden: int = 128  # width of the MLP's hidden layer / the CNN's head
    sampler: str = "tpe"
    pruner: str = "sha"
    # The first trials are known-good recipes (study/search/warm_start.py), where the space holds
    # their choices; part of the study's identity.
    warm_start: bool = True
    device: str = "auto"
    # Intra-op CPU threads per process (0: torch's default, one per core). One is about as fast
    # for MNIST-sized ops and does not collapse when the cores are shared (docs/benchmarks.md).
    cpu_threads: int = 1
    amp: str = "none"  # "bf16": bfloat16 autocast in the training step (for GPUs)
    compile: str = "none"  # torch.compile mode of the model, compiled once per process
    # torch.set_float32_matmul_precision for the run: "high" lets float32 matrix products use
    # TF32 on GPUs that have it. torch's own default until a GPU measures what pays.
    matmul_precision: str = "highest"
    # A cohort's full-batch steps captured as one CUDA graph and replayed (CUDA only; on the CPU
    # a warning and eager steps). The cohort driver trains even a cohort of one then.
    cuda_graph: bool = False
    # Per-epoch gradient norms, update ratios and dead units, which the dying-ReLU and
    # exploding-gradient detectors read; off saves their cost (docs/benchmarks.md).
    signals: bool = True
    # Trials trained at once as one stacked model (study/train/cohort/); None: the device's default
    # (study.run.cohort_search.DEFAULT_COHORT_SIZE); 1: one trial at a time through
    # study.optimize.
    cohort_size: int | None = None
    data_dir: Path = DEFAULT_DATA_DIR
    download: bool = True  # fetch MNIST through torchvision when DATA_DIR has none
    allow_noncanonical_data: bool = False
    tracking_uri: str = DEFAULT_TRACKING_URI
    # The longest one MLflow call may wait for a tracking server that does not answer; after
    # that the run goes on and keeps its logs in MLFLOW_SPOOL for `mnist-study sync-mlflow`.
    tracking_timeout: float = 30.0
    mlflow_spool: Path = Path("mlflow/spool")
    # Seconds without a heartbeat after which a RUNNING trial's worker is taken for dead (RDB
    # storages): its trial is failed and retried, its MLflow runs closed.
    heartbeat_grace: float = 120.0
    seed: int = 0
    val_fraction: float = 0.1
    cv_folds: int | None = None  # K-fold cross-validation over train+val instead of holdout
    # A trial (a fold, with cv_folds) stops after this many epochs without a validation loss
    # better than its best by more than early_stopping_min_delta; 0: off (study/early_stopping)
    early_stopping_patience: int = 8
    early_stopping_min_delta: float = 0.0
    # Also train the seed recipe on the study's split, shown beside the best trial
    # (study/run/baseline.py): one more run of max_epochs, once per study.
    baseline: bool = False
    # Prune a trial as soon as a detector finds it diverging or with dying ReLUs
    # (study/diagnose/detectors.py); off: those trials are left to the pruner, diagnosed at
    # their end.
    prune_diagnosed: bool = False
    # Aligned, intensity-normalised distance (data_pipeline.duplicates) at or under which two
    # images are near duplicates; 0: exact only.
    near_duplicate_threshold: float = 0.01
    drop_duplicates: bool = False  # drop training images that duplicate another part's
    no_progress: bool = False
    verbose: bool = False  # Optuna's own per-trial log lines too
    search_space: SearchSpace = field(default_factory=SearchSpace)
    diagnosis: Thresholds = field(default_factory=Thresholds)  # the detectors' thresholds
    # The settings the user gave (command line, --config file, environment); the rest are
    # today's defaults, which a resumed study replaces with the ones it was made with
    # (record.adopt_stored_settings). None: every setting was given (a config built in code).
    given: frozenset[str] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.n_trials is not None:
            _check_positive("n_trials", self.n_trials)
        _check_positive("max_epochs", self.max_epochs)
        _check_positive("hidden", self.hidden)
        if self.timeout is not None and not 0 < self.timeout < math.inf:
            raise ConfigError(f"timeout must be a finite number of seconds > 0, but got "
                              f"timeout={self.timeout}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), but got "
                              f"val_fraction={self.val_fraction}")
        if not 5 <= self.tracking_timeout < math.inf:
            raise ConfigError(f"tracking_timeout must be at least 5 seconds, but got "
                              f"tracking_timeout={self.tracking_timeout}")
        if not 60 <= self.heartbeat_grace < math.inf:
            raise ConfigError(f"heartbeat_grace must be at least 60 seconds (two heartbeats), "
                              f"but got heartbeat_grace={self.heartbeat_grace}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, but got seed={self.seed}")
        if self.cpu_threads < 0:
            raise ConfigError(f"cpu_threads must be >= 0 (0: one per core), but got "
                              f"cpu_threads={self.cpu_threads}")
        if self.cohort_size is not None and self.cohort_size < 1:
            raise ConfigError(f"cohort_size must be >= 1, but got cohort_size={self.cohort_size}")
        if self.compile != "none" and self.cohort_size not in (None, 1):
            raise ConfigError(f"compile={self.compile!r} compiles a cohort of one: it needs "
                              f"cohort_size = 1 (--cohort-size 1), but got "
                              f"cohort_size={self.cohort_size}")
        if self.compile != "none" and self.cuda_graph:
            raise ConfigError(f"compile={self.compile!r} compiles the network and "
                              f"cuda_graph captures the cohort's step: choose one "
                              f"(compile='reduce-overhead' makes CUDA graphs of its own)")
        if self.early_stopping_patience < 0:
            raise ConfigError(f"early_stopping_patience must be >= 0 (0: off), but got "
                              f"early_stopping_patience={self.early_stopping_patience}")
        if not 0.0 <= self.early_stopping_min_delta < math.inf:
            raise ConfigError(f"early_stopping_min_delta must be a finite number >= 0, but got "
                              f"early_stopping_min_delta={self.early_stopping_min_delta}")
        if self.cv_folds is not None and self.cv_folds < 2:
            raise ConfigError(f"cv_folds must be >= 2, but got cv_folds={self.cv_folds}")
        if not 0.0 <= self.near_duplicate_threshold < 1.0:
            raise ConfigError(f"near_duplicate_threshold must be in [0, 1), but got "
                              f"near_duplicate_threshold={self.near_duplicate_threshold}")
        if not self.study_name.strip():
            raise ConfigError("study_name must not be empty")
        allowed: dict[str, Collection[str]] = {
            "model": MODELS, "sampler": SAMPLERS, "pruner": PRUNERS, "amp": AMP_MODES,
            "compile": COMPILE_MODES, "matmul_precision": MATMUL_PRECISIONS}
        if self.device not in DEVICES and not _CUDA_INDEX.fullmatch(self.device):
            raise ConfigError(f"device must be one of {list(DEVICES)} or cuda:N (N a GPU's "
                              f"index, from 0), but got device={self.device!r}")
        for name, names in allowed.items():
            if getattr(self, name) not in names:
                raise ConfigError(f"{name} must be one of {list(names)}, but got "
                                  f"{name}={getattr(self, name)!r}")

    def trial_limit(self) -> int | None:
        """The study's trial budget: --n-trials; with --timeout alone, none (time is the
        budget); with neither, DEFAULT_N_TRIALS."""
        if self.n_trials is not None:
            return self.n_trials
        return None if self.timeout is not None else DEFAULT_N_TRIALS

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view, as logged with every study."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name != "given"}  # where a value came from is no setting
        out["data_dir"] = str(self.data_dir)
        out["mlflow_spool"] = str(self.mlflow_spool)
        out["search_space"] = self.search_space.as_dict()
        out["diagnosis"] = self.diagnosis.as_dict()
        return out


def check_batch_sizes(space: SearchSpace, *, train_sizes: Collection[int]) -> None:
    """Refuse batch sizes over the smallest of TRAIN_SIZES (each fold's), known once the data
    is split: each would train on one batch of the whole split, the same trial under several
    names. With BatchNorm, refuse a size that leaves a last batch of one image: BatchNorm
    cannot normalise a single image (training would fail mid-study)."""
    train_size = min(train_sizes)
    if "batch" in space.norms:
        lonely = sorted({size for size in space.batch_sizes for n in train_sizes
                         if size > 1 and n % size == 1})
        if lonely:
            raise ConfigError(f"search_space batch_sizes {lonely} leave a last batch of one "
                              f"image in a train split of {sorted(set(train_sizes))} images, "
                              f"which BatchNorm (norms = [..., \"batch\"]) cannot normalise; "
                              f"choose other batch_sizes or another val_fraction")
    too_big = sorted(size for size in space.batch_sizes if size > train_size)
    if too_big:
        raise ConfigError(f"search_space batch_sizes {too_big} are larger than the train split, "
                          f"which has {train_size} images; set [search_space] batch_sizes in the "
                          f"--config file to sizes up to {train_size}")


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{name} must be >= 1, but got {name}={value}")


def resolve_config(
    cli: Mapping[str, Any], *, config_path: Path | None, env: Mapping[str, str]
) -> StudyConfig:
    """Merge CLI values (None = not given), the TOML file, the environment and the defaults."""
    values: dict[str, Any] = {}
    for key, var in ENV_VARS.items():
        if env.get(var):
            values[key] = env[var]
    if config_path is not None:
        values.update(load_toml(config_path))
    values.update({key: value for key, value in cli.items() if value is not None})
    config = _build(values, source=str(config_path) if config_path else "command line")
    return dataclasses.replace(config, given=frozenset(values))


def load_toml(path: Path) -> dict[str, Any]:
    """Read a config file whose keys are the flag names (with - or _), plus the tables
    [search_space] and [diagnosis]."""
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    values = {key.replace("-", "_"): value for key, value in raw.items()}
    if len(values) != len(raw):
        twice = sorted({k for k in raw if k.replace("-", "_") != k and k.replace("-", "_") in raw})
        raise ConfigError(f"{path}: {twice} given both with dashes and with underscores; keep one")
    known = {f.name for f in dataclasses.fields(StudyConfig)} - {"given"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown keys {unknown}; valid keys are {sorted(known)}")
    if "search_space" in values:
        table = values["search_space"]
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: search_space must be a table ([search_space])")
        values["search_space"] = SearchSpace.from_mapping(table, source=str(path))
    if "diagnosis" in values:
        table = values["diagnosis"]
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: diagnosis must be a table ([diagnosis])")
        values["diagnosis"] = Thresholds.from_mapping(table, source=str(path))
    return values


def _build(values: dict[str, Any], *, source: str) -> StudyConfig:
    types = {f.name: f.type for f in dataclasses.fields(StudyConfig)}
    coerced: dict[str, Any] = {}
    for key, value in values.items():
        if key in ("search_space", "diagnosis") or value is None:
            coerced[key] = value
            continue
        if key == "timeout":  # seconds, or a duration such as "10m"
            try:
                coerced[key] = parse_duration(value)
            except ConfigError as exc:
                raise ConfigError(f"{source}: {exc}") from exc
            continue
        kind = types[key]
        try:
            coerced[key] = _coerce(value, str(kind))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: {key}={value!r} is not a valid {kind}") from exc
    if coerced.get("max_epochs") is None:
        coerced["max_epochs"] = DEFAULT_MAX_EPOCHS.get(coerced.get("model") or "mlp",
                                                       DEFAULT_MAX_EPOCHS["mlp"])
    return StudyConfig(**coerced)


def _coerce(value: Any, kind: str) -> Any:
    # Field types are strings under `from __future__ import annotations`.
    if kind == "bool":
        if not isinstance(value, bool):
            raise TypeError("expected true or false")
        return value
    # Strict on purpose: n_trials = "5" or 3.0 in a TOML file is a typo worth one clear line.
    if kind in ("int", "int | None"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError("expected an integer")
        return value
    if kind in ("float", "float | None"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError("expected a number")
        return float(value)
    if kind == "Path":
        if not isinstance(value, (str, Path)):
            raise TypeError("expected a path")
        return Path(os.path.expanduser(str(value)))
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value
