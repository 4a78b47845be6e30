"""MNIST acquisition and validation, the stratified split, and device-resident tensors."""

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
from data_pipeline.prepare import SearchData, prepare_search_data, prepare_test_data
from data_pipeline.split import Split, stratified_split
from data_pipeline.tensors import Normalizer, TensorSet, shuffled_batches, to_tensor_set

__all__ = [
    "CANONICAL_MD5",
    "DATA_DIR_ENV",
    "DataError",
    "IdxContent",
    "LabelledImages",
    "MnistFiles",
    "Normalizer",
    "SearchData",
    "Split",
    "TensorSet",
    "find_mnist",
    "locate_mnist",
    "parse_idx",
    "prepare_search_data",
    "prepare_test_data",
    "read_idx",
    "shuffled_batches",
    "stratified_split",
    "to_tensor_set",
    "write_idx",
]
