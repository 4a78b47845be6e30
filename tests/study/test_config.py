from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest

from models import MODELS
from study.config import (
    DEFAULT_DATA_DIR,
    DEFAULT_TRACKING_URI,
    StudyConfig,
    check_batch_sizes,
    resolve_config,
)
from study.diagnose.detectors import Thresholds
from study.errors import ConfigError
from study.search.search_space import SCHEDULERS, SearchSpace
from study.search.strategy import PRUNERS, SAMPLERS


def _toml(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(body)
    return path


def test_defaults_without_any_source() -> None:
    config = resolve_config({}, config_path=None, env={})
    assert config == StudyConfig()  # nothing given: every default
    assert config.data_dir == DEFAULT_DATA_DIR  # defaults live in the dataclass
    assert config.tracking_uri == DEFAULT_TRACKING_URI


@pytest.mark.parametrize(
    ("field", "env_var", "values", "expected"),
    [
        ("data_dir", "MNIST_STUDY_DATA_DIR", ("/cli", "/toml", "/env"), Path("/cli")),
        ("data_dir", "MNIST_STUDY_DATA_DIR", (None, "/toml", "/env"), Path("/toml")),
        ("data_dir", "MNIST_STUDY_DATA_DIR", (None, None, "/env"), Path("/env")),
        ("data_dir", "MNIST_STUDY_DATA_DIR", (None, None, None), DEFAULT_DATA_DIR),
        ("tracking_uri", "MLFLOW_TRACKING_URI", ("http://cli", "http://toml", "http://env"),
         "http://cli"),
        ("tracking_uri", "MLFLOW_TRACKING_URI", (None, "http://toml", "http://env"),
         "http://toml"),
        ("tracking_uri", "MLFLOW_TRACKING_URI", (None, None, "http://env"), "http://env"),
        ("tracking_uri", "MLFLOW_TRACKING_URI", (None, None, None), DEFAULT_TRACKING_URI),
    ],
)
def test_precedence_cli_toml_env_default(
    tmp_path: Path, field: str, env_var: str, values: tuple[str | None, ...], expected: object
) -> None:
    cli_value, toml_value, env_value = values
    cli: dict[str, Any] = {field: cli_value, "n_trials": None}  # None means "flag not given"
    path = _toml(tmp_path, f'{field} = "{toml_value}"\n' if toml_value else "")
    env = {env_var: env_value} if env_value else {}
    # The first source that sets a value wins: CLI, then TOML, then env, then default.
    assert getattr(resolve_config(cli, config_path=path, env=env), field) == expected


def test_precedence_for_plain_settings(tmp_path: Path) -> None:
    path = _toml(tmp_path, "n_trials = 7\nmax_epochs = 3\n")
    config = resolve_config({"n_trials": 11, "max_epochs": None}, config_path=path, env={})
    assert config.n_trials == 11  # the flag beats the file
    assert config.max_epochs == 3  # the file beats the default
    assert config.seed == 0  # neither given: the default


@pytest.mark.parametrize(("given", "expected"), [
    ({"model": "mlp"}, 40), ({"model": "cnn"}, 20), ({}, 40),
    ({"model": "cnn", "max_epochs": 7}, 7),  # a given cap is kept, whatever the network
])
def test_max_epochs_defaults_per_network(given: dict[str, Any], expected: int) -> None:
    # A CNN epoch costs tens of MLP epochs: its cap is its own, not the MLP's 40.
    assert resolve_config(given, config_path=None, env={}).max_epochs == expected


def test_a_toml_cap_beats_the_network_s_default(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'model = "cnn"\nmax_epochs = 30\n')
    assert resolve_config({}, config_path=path, env={}).max_epochs == 30


def test_empty_env_var_ignored() -> None:
    config = resolve_config({}, config_path=None, env={"MNIST_STUDY_DATA_DIR": ""})
    # An empty variable is unset, not the current directory.
    assert config.data_dir == DEFAULT_DATA_DIR


def test_data_dir_expands_user(tmp_path: Path) -> None:
    config = resolve_config({}, config_path=None, env={"MNIST_STUDY_DATA_DIR": "~/mnist"})
    assert config.data_dir == Path.home() / "mnist"  # ~ expanded like a shell would


@pytest.mark.parametrize("key", ["n-trials", "n_trials"])
def test_toml_keys_dash_or_underscore(tmp_path: Path, key: str) -> None:
    path = _toml(tmp_path, f"{key} = 5\nval-fraction = 0.2\nallow_noncanonical_data = true\n")
    config = resolve_config({}, config_path=path, env={})
    assert config.n_trials == 5  # flag spelling and field spelling both accepted
    assert config.val_fraction == 0.2
    assert config.allow_noncanonical_data is True


@pytest.mark.parametrize("key", ["n_trails", "learning-rate"])
def test_unknown_toml_key_rejected(tmp_path: Path, key: str) -> None:
    path = _toml(tmp_path, f"{key} = 5\n")
    with pytest.raises(ConfigError) as info:
        resolve_config({}, config_path=path, env={})
    message = str(info.value)
    assert str(path) in message  # names the file
    assert key.replace("-", "_") in message  # names the key
    assert "n_trials" in message  # and lists the valid ones


def test_search_space_table(tmp_path: Path) -> None:
    path = _toml(tmp_path, """
n_trials = 4

[search_space]
lr = [1e-3, 1e-2]
batch_sizes = [64, 128]
optimizers = ["adam"]
schedulers = ["none", "cosine"]
""")
    config = resolve_config({}, config_path=path, env={})
    expected = SearchSpace(lr=(1e-3, 1e-2), batch_sizes=(64, 128), optimizers=("adam",),
                           schedulers=("none", "cosine"))
    assert config.search_space == expected  # listed ranges override, the rest keep defaults
    assert config.n_trials == 4  # top-level keys still read alongside the table
    assert config.to_dict()["search_space"]["optimizers"] == ["adam"]  # JSON-friendly view


def test_search_space_unknown_key(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[search_space]\nlearning_rate = [0.1, 0.2]\n")
    # Typos inside the table are caught too, naming file and key.
    with pytest.raises(ConfigError, match=rf"{path}.*unknown \[search_space\] keys.*learning_rate"):
        resolve_config({}, config_path=path, env={})


def test_search_space_bad_range_shows_value(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[search_space]\nlr = [0.1, 0.01]\n")
    # Range checks run on the table, showing the bad range.
    with pytest.raises(ConfigError, match=r"lr=\[0.1, 0.01\]"):
        resolve_config({}, config_path=path, env={})


def test_search_space_not_a_table(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'search_space = "wide"\n')
    # A scalar where a table belongs is refused, naming the file.
    with pytest.raises(ConfigError, match=f"{path}: search_space must be a table"):
        resolve_config({}, config_path=path, env={})


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ('n_trials = "ten"', "n_trials='ten'"),
        ("n_trials = 2.5", "n_trials=2.5"),
        ('n_trials = "5"', "n_trials='5'"),  # a quoted number is a typo, not a number
        ("n_trials = 3.0", "n_trials=3.0"),
        ("data_dir = 5", "data_dir=5"),
        ("max_epochs = true", "max_epochs=True"),
        ('download = "yes"', "download='yes'"),
        ("val_fraction = false", "val_fraction=False"),
        ('timeout = "soon"', "timeout='soon'"),
        ("sampler = 3", "sampler=3"),
    ],
)
def test_bad_types(tmp_path: Path, line: str, shown: str) -> None:
    path = _toml(tmp_path, line + "\n")
    with pytest.raises(ConfigError) as info:
        resolve_config({}, config_path=path, env={})
    # The message names the file and shows the offending value as written.
    assert str(path) in str(info.value)
    assert shown in str(info.value)


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("n_trials = 0", "n_trials=0"),
        ("max_epochs = -1", "max_epochs=-1"),
        ("hidden = 0", "hidden=0"),
        ("val_fraction = 1.5", "val_fraction=1.5"),
        ("val_fraction = 0.0", "val_fraction=0.0"),
        ("timeout = 0", "timeout=0"),
        ("seed = -3", "seed=-3"),
        ("sampler = 'foo'", "sampler='foo'"),
        ("pruner = 'always'", "pruner='always'"),
        ("model = 'resnet'", "model='resnet'"),
        ("device = 'tpu'", "device='tpu'"),
        ("device = 'cuda:x'", "device='cuda:x'"),
        ("matmul_precision = 'low'", "matmul_precision='low'"),
        ("device = 'cuda:-1'", "device='cuda:-1'"),
        ("compile = 'default'\ncuda_graph = true", "choose one"),
        ("study_name = '  '", "study_name must not be empty"),
        ("timeout = nan", "timeout=nan"),
        ("timeout = inf", "timeout=inf"),
        ("cpu_threads = -1", "cpu_threads=-1"),
        ("amp = 'fp16'", "amp='fp16'"),
        ("compile = 'max'", "compile='max'"),
    ],
)
def test_invalid_values(tmp_path: Path, line: str, shown: str) -> None:
    path = _toml(tmp_path, line + "\n")
    # Well-typed but invalid values are refused, showing the bad value.
    with pytest.raises(ConfigError, match=shown):
        resolve_config({}, config_path=path, env={})


def test_a_gpu_is_named_by_its_index() -> None:
    for device in ("cuda:0", "cuda:3", "cuda", "cpu", "auto"):
        assert resolve_config({"device": device}, config_path=None, env={}).device == device


def test_invalid_cli_value_shown() -> None:
    # The same validation applies to flags.
    with pytest.raises(ConfigError, match="sampler='foo'"):
        resolve_config({"sampler": "foo"}, config_path=None, env={})


def test_invalid_toml(tmp_path: Path) -> None:
    path = _toml(tmp_path, "n_trials = = 3\n")
    # A syntax error names the file.
    with pytest.raises(ConfigError, match=f"config file {path} is not valid TOML"):
        resolve_config({}, config_path=path, env={})


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    # A missing file is a ConfigError naming it, not an OSError.
    with pytest.raises(ConfigError, match=f"cannot read config file {path}"):
        resolve_config({}, config_path=path, env={})


def test_to_dict_is_json_friendly(tmp_path: Path) -> None:
    config = resolve_config({"data_dir": tmp_path}, config_path=None, env={})
    out = config.to_dict()
    assert out["data_dir"] == str(tmp_path)  # paths become strings
    assert json.loads(json.dumps(out)) == out  # the whole view survives JSON


def test_same_key_with_dashes_and_underscores_is_refused(tmp_path: Path) -> None:
    path = _toml(tmp_path, "n-trials = 3\nn_trials = 4\n")
    # Which one wins would be an accident of ordering: refuse and name the key.
    with pytest.raises(ConfigError, match=r"\['n-trials'\] given both"):
        resolve_config({}, config_path=path, env={})


def test_speed_settings_from_toml(tmp_path: Path) -> None:
    path = _toml(tmp_path, "cpu_threads = 0\namp = 'bf16'\ncompile = 'reduce-overhead'\n")
    config = resolve_config({}, config_path=path, env={})
    # How fast, not what: threads (0 = one per core), bf16 autocast, the compile mode.
    assert (config.cpu_threads, config.amp, config.compile) == (0, "bf16", "reduce-overhead")
    assert (StudyConfig().amp, StudyConfig().compile) == ("none", "none")  # off by default


def test_batch_sizes_larger_than_the_train_split_are_refused_naming_its_size() -> None:
    space = SearchSpace(batch_sizes=(32, 512, 64, 1024))
    check_batch_sizes(space, train_sizes=[1024])  # a batch of the whole split is still one batch
    # Too large: each would be the whole split in one step; the message names the split's size.
    with pytest.raises(ConfigError, match=r"batch_sizes \[512, 1024\] are larger than the train "
                                          r"split, which has 300 images.*sizes up to 300"):
        check_batch_sizes(space, train_sizes=[300])


def test_with_batchnorm_a_last_batch_of_one_image_is_refused() -> None:
    # 97 images at batch 32 leave one: BatchNorm cannot normalise it, training would fail.
    check_batch_sizes(SearchSpace(batch_sizes=(32,), norms=("none",)),
                      train_sizes=[97])  # no BatchNorm: fine
    space = SearchSpace(batch_sizes=(32, 48), norms=("none", "batch"))
    check_batch_sizes(space, train_sizes=[96, 98])
    with pytest.raises(ConfigError, match=r"batch_sizes \[32, 48\] leave a last batch of one "
                                          r"image in a train split of \[97\] images"):
        check_batch_sizes(space, train_sizes=[97])


# Names are checked against the registries that build things, never against a copied list.
REGISTRIES: dict[str, Collection[str]] = {
    "model": MODELS, "sampler": SAMPLERS, "pruner": PRUNERS, "scheduler": SCHEDULERS}


def _accepts(key: str, name: str) -> bool:
    try:
        if key == "scheduler":  # a search-space choice: [search_space] schedulers = [...]
            resolve_config({"search_space": SearchSpace(schedulers=(name,))},
                           config_path=None, env={})
        else:
            resolve_config({key: name}, config_path=None, env={})
    except ConfigError:
        return False
    return True


@pytest.mark.parametrize("key", sorted(REGISTRIES))
def test_the_names_config_accepts_are_exactly_the_registry_keys(key: str) -> None:
    # Every registry's names, plus near misses: only this key's registry may pass.
    candidates = {n for names in REGISTRIES.values() for n in names} | {"", "MLP", "resnet"}
    assert {n for n in candidates if _accepts(key, n)} == set(REGISTRIES[key])


@pytest.mark.parametrize("key", ["model", "sampler", "pruner"])
def test_an_unknown_name_is_refused_listing_the_registry_s_names(key: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_config({key: "nonesuch"}, config_path=None, env={})
    # The bad value, and the choices in the registry's order: what --help lists.
    assert str(info.value) == (f"{key} must be one of {list(REGISTRIES[key])}, but got "
                               f"{key}='nonesuch'")


def test_an_unknown_scheduler_is_refused_listing_the_registry_s_names(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[search_space]\nschedulers = [\"cosine\", \"warmup\"]\n")
    with pytest.raises(ConfigError) as info:
        resolve_config({}, config_path=path, env={})
    # The file, the registry's names and the bad list.
    assert str(info.value) == (f"{path}: [search_space] schedulers must be a non-empty subset "
                               f"of {list(SCHEDULERS)}, but got ['cosine', 'warmup']")


def test_folds_and_leakage_settings_come_from_flags_or_toml_and_are_validated(
    tmp_path: Path,
) -> None:
    toml = tmp_path / "s.toml"
    toml.write_text("cv-folds = 4\nnear-duplicate-threshold = 0.1\ndrop-duplicates = true\n")
    config = resolve_config({}, config_path=toml, env={})
    assert (config.cv_folds, config.near_duplicate_threshold, config.drop_duplicates) == (
        4, 0.1, True)  # TOML keys are the flag names
    assert resolve_config({}, config_path=None, env={}).cv_folds is None  # holdout by default
    with pytest.raises(ConfigError, match="cv_folds must be >= 2, but got cv_folds=1"):
        resolve_config({"cv_folds": 1}, config_path=None, env={})
    with pytest.raises(ConfigError, match=r"near_duplicate_threshold must be in \[0, 1\)"):
        resolve_config({"near_duplicate_threshold": 1.0}, config_path=None, env={})


def test_cohort_size_is_validated_and_excludes_compile() -> None:
    assert StudyConfig().cohort_size is None  # the device's default
    assert resolve_config({"cohort_size": 8}, config_path=None, env={}).cohort_size == 8
    with pytest.raises(ConfigError, match="cohort_size must be >= 1, but got cohort_size=0"):
        StudyConfig(cohort_size=0)
    with pytest.raises(ConfigError, match="needs cohort_size = 1"):
        StudyConfig(compile="default", cohort_size=4)
    assert StudyConfig(compile="default").cohort_size is None  # --compile alone: one at a time


@pytest.mark.parametrize("example", sorted((Path(__file__).resolve().parents[2] / "study"
                                            / "examples").glob("*.toml")), ids=lambda p: p.name)
def test_every_example_config_resolves(example: Path) -> None:
    config = resolve_config({}, config_path=example, env={})
    assert config.study_name  # and no key or value the run would refuse


def test_the_diagnosis_table_sets_the_detectors_thresholds(tmp_path: Path) -> None:
    path = _toml(tmp_path, "prune_diagnosed = true\n\n[diagnosis]\nspike_mads = 3\n"
                           "dying_relu = 0.9\n")
    config = resolve_config({}, config_path=path, env={})
    assert config.diagnosis == Thresholds(spike_mads=3, dying_relu=0.9)  # the rest default
    assert config.prune_diagnosed
    assert config.to_dict()["diagnosis"]["spike_mads"] == 3  # logged with the study
    typo = _toml(tmp_path, "[diagnosis]\nspike_mad = 3\n")
    with pytest.raises(ConfigError, match=rf"{typo}: unknown \[diagnosis\] keys \['spike_mad'\]"):
        resolve_config({}, config_path=typo, env={})
    scalar = _toml(tmp_path, 'diagnosis = "strict"\n')
    with pytest.raises(ConfigError, match=r"diagnosis must be a table"):
        resolve_config({}, config_path=scalar, env={})
