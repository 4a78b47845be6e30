"""study.bench.worker: one benchmark study from a JSON spec to a JSON result, in-process."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import optuna

from data_pipeline import find_mnist
from study.bench.conventional import torchvision_root
from study.bench.worker import StudyResult, StudySpec
from study.bench.worker import main as worker_main
from tests.synthetic import write_synthetic_mnist


def test_worker_round_trips_a_spec_through_json(tmp_path: Path) -> None:
    data = write_synthetic_mnist(tmp_path / "mnist", n_train=300, n_test=50)
    files = find_mnist(data, verify=False)
    assert files is not None
    root = torchvision_root(files, tmp_path / "torchvision")
    assert sorted(p.name for p in (root / "MNIST" / "raw").iterdir()) == sorted(files.paths)
    spec = StudySpec(label="conventional-smoke", kind="conventional", n_trials=2, max_epochs=1,
                     pruner="none", seed=0, tracking=False, data_dir=str(data),
                     torchvision_root=str(root), workdir=str(tmp_path), tracking_uri="",
                     device="cpu", cpu_threads=0, allow_noncanonical_data=True)
    spec_path, result_path = tmp_path / "spec.json", tmp_path / "result.json"
    spec_path.write_text(json.dumps(dataclasses.asdict(spec)))
    verbosity = optuna.logging.get_verbosity()
    try:  # what `python -m study.bench.worker SPEC RESULT` does in its own process
        assert worker_main([str(spec_path), str(result_path)]) == 0
    finally:
        optuna.logging.set_verbosity(verbosity)
    result = StudyResult.from_json(json.loads(result_path.read_text()))
    assert result.spec == spec  # the result names exactly what was run
    assert [t.state for t in result.trials] == ["COMPLETE", "COMPLETE"]
    assert all(t.epochs == 1 and 0 < t.end_s <= result.search_s for t in result.trials)
    assert result.peak_rss_mb > 0
