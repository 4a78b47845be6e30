"""A trial's checkpoint: its folds' best weights in one state dict, and back."""

from __future__ import annotations

from collections.abc import Sequence

from study.errors import StudyError
from study.run.reporting import FoldResult
from study.tracking import StateDict


def merge_fold_states(folds: Sequence[FoldResult]) -> StateDict:
    """One checkpoint: one fold's weights as they are, K folds' under 'fold{k}.' (k from 1)."""
    if len(folds) == 1:
        return dict(folds[0].state or {})
    return {f"fold{k + 1}.{name}": tensor for k, fold in enumerate(folds)
            for name, tensor in (fold.state or {}).items()}


def split_fold_states(state: StateDict, k: int) -> list[StateDict]:
    """The K state dicts merge_fold_states packed; a key of no fold is a clear error."""
    if k == 1:
        if any(key.startswith("fold") and "." in key for key in state):
            raise StudyError("the checkpoint holds fold models of a cross-validated trial; "
                             "was the study made with --cv-folds?")
        return [state]
    folds: list[StateDict] = [{} for _ in range(k)]
    for key, tensor in state.items():
        prefix, _, name = key.partition(".")
        number = int(prefix.removeprefix("fold")) if prefix.startswith("fold") else 0
        if not 1 <= number <= k:
            raise StudyError(f"checkpoint key {key!r} is not of a {k}-fold cross-validated "
                             f"trial; was the study made with another --cv-folds?")
        folds[number - 1][name] = tensor
    return folds
