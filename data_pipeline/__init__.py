"""MNIST acquisition and validation, the stratified split, and device-resident tensors."""

from data_pipeline.audit import AuditReport, DuplicatePair
from data_pipeline.audited import AuditedData, audit_files, prepare_audited_data
from data_pipeline.errors import DataError
from data_pipeline.folds import CvData, Folds, stratified_folds
from data_pipeline.idx import IdxContent, parse_idx, read_idx, write_idx
from data_pipeline.mnist import (
    CANONICAL_MD5,
    DATA_DIR_ENV,
    LabelledImages,
    MnistFiles,
    find_mnist,
    locate_mnist,
)
from data_pipeline.prepare import (
    SearchData,
    prepare_search_data,
    prepare_test_data,
    search_data_from_split,
)
from data_pipeline.split import Split, stratified_split
from data_pipeline.tensors import Normalizer, TensorSet, shuffled_batches, to_tensor_set

__all__ = [
    "CANONICAL_MD5",
    "DATA_DIR_ENV",
    "AuditReport",
    "AuditedData",
    "CvData",
    "DataError",
    "DuplicatePair",
    "Folds",
    "IdxContent",
    "LabelledImages",
    "MnistFiles",
    "Normalizer",
    "SearchData",
    "Split",
    "TensorSet",
    "audit_files",
    "find_mnist",
    "locate_mnist",
    "parse_idx",
    "prepare_audited_data",
    "prepare_search_data",
    "prepare_test_data",
    "read_idx",
    "search_data_from_split",
    "shuffled_batches",
    "stratified_folds",
    "stratified_split",
    "to_tensor_set",
    "write_idx",
]
