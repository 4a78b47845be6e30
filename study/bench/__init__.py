"""`python -m study.bench`: the project's fast paths against the conventional loop, side by side.

Sections (each runnable alone with --only): epochs, throughput, tracking, pruning, target,
profile. Results go to docs/benchmarks.md (tables) and docs/benchmarks.json (every number).
"""

from __future__ import annotations

SECTIONS = ("epochs", "throughput", "tracking", "pruning", "target", "profile")

__all__ = ["SECTIONS"]
