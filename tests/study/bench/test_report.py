"""study.bench.report: a partial run merged into the last report of the same machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from study.bench import SECTIONS
from study.bench.report import merge, render

# Each test here runs a study in a process, a server or a benchmark: seconds to minutes.
pytestmark = pytest.mark.slow


def test_a_partial_run_keeps_the_other_sections(
    quick_report: tuple[dict[str, Any], str], tmp_path: Path
) -> None:
    report, _ = quick_report
    (tmp_path / "benchmarks.json").write_text(json.dumps(report))
    fresh = {"epochs": report["sections"]["epochs"]}
    merged = merge(tmp_path, report["machine"], fresh)
    assert list(merged["sections"]) == list(SECTIONS)  # --only epochs replaced one section
    other_machine = {**report["machine"], "cpu": "another CPU"}
    assert list(merge(tmp_path, other_machine, fresh)["sections"]) == ["epochs"]
    assert "## 1. Epoch time" in render(merged)
