"""MNIST acquisition and validation, the stratified partition, and device-resident tensors.

The names below are imported on first use (PEP 562): `from data_pipeline.errors import
DataError` runs this file, and the CLI must answer `--help` or a bad flag without paying for
torch and scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from data_pipeline.audit import AuditReport, DuplicatePair
    from data_pipeline.audited import AuditedData, audit_files, prepare_audited_data
    from data_pipeline.errors import DataError
    from data_pipeline.idx import IdxContent, parse_idx, read_idx, write_idx
    from data_pipeline.mnist import (
        CANONICAL_MD5,
        DATA_DIR_ENV,
        LabelledImages,
        MnistFiles,
        find_mnist,
        locate_mnist,
    )
    from data_pipeline.partition import (
        Partition,
        make_partition,
        stratified_folds,
        stratified_split,
    )
    from data_pipeline.prepare import (
        SearchData,
        fold_normalizers,
        prepare_search_data,
        prepare_test_data,
        search_data,
    )
    from data_pipeline.tensors import (
        Fold,
        Normalizer,
        TensorSet,
        shuffled_batches,
        to_tensor_set,
    )

# Public name -> the submodule that defines it.
_HOME = {
    "AuditReport": "audit", "DuplicatePair": "audit",
    "AuditedData": "audited", "audit_files": "audited", "prepare_audited_data": "audited",
    "DataError": "errors",
    "IdxContent": "idx", "parse_idx": "idx", "read_idx": "idx", "write_idx": "idx",
    "CANONICAL_MD5": "mnist", "DATA_DIR_ENV": "mnist", "LabelledImages": "mnist",
    "MnistFiles": "mnist", "find_mnist": "mnist", "locate_mnist": "mnist",
    "Partition": "partition", "make_partition": "partition", "stratified_folds": "partition",
    "stratified_split": "partition",
    "SearchData": "prepare", "fold_normalizers": "prepare",
    "prepare_search_data": "prepare", "prepare_test_data": "prepare", "search_data": "prepare",
    "Fold": "tensors", "Normalizer": "tensors", "TensorSet": "tensors",
    "shuffled_batches": "tensors", "to_tensor_set": "tensors",
}

__all__ = [
    "CANONICAL_MD5",
    "DATA_DIR_ENV",
    "AuditReport",
    "AuditedData",
    "DataError",
    "DuplicatePair",
    "Fold",
    "IdxContent",
    "LabelledImages",
    "MnistFiles",
    "Normalizer",
    "SearchData",
    "Partition",
    "TensorSet",
    "audit_files",
    "find_mnist",
    "fold_normalizers",
    "locate_mnist",
    "make_partition",
    "parse_idx",
    "prepare_audited_data",
    "prepare_search_data",
    "prepare_test_data",
    "read_idx",
    "search_data",
    "shuffled_batches",
    "stratified_folds",
    "stratified_split",
    "to_tensor_set",
    "write_idx",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
