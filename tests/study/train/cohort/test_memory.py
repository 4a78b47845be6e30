"""The memory estimate that caps --cohort-size."""

from __future__ import annotations

import pytest
import torch

import models
from study.train.cohort import memory
from study.train.cohort.memory import (
    evaluation_bytes,
    evaluation_image_bytes,
    evaluation_slice,
    largest_cohort,
    member_bytes,
)

EXAMPLE = torch.zeros(1, 1, 28, 28)  # one image as the networks take it


def test_a_member_costs_its_weights_state_and_activations() -> None:
    mlp = models.build("mlp", dropout=0.0)
    weights = sum(p.numel() * 4 for p in mlp.parameters())  # 101,770 float32
    fused = member_bytes(mlp, EXAMPLE, batch_size=64, vectorised=False)
    vectorised = member_bytes(mlp, EXAMPLE, batch_size=64, vectorised=True)
    assert vectorised - fused == 3 * weights  # the vectorised update's work tensors
    assert fused > 4 * weights  # weights, gradient, two Adam moments, and activations


def test_activations_grow_with_the_batch_and_the_network() -> None:
    mlp, cnn = models.build("mlp", dropout=0.0), models.build("cnn", dropout=0.0)
    small = member_bytes(mlp, EXAMPLE, batch_size=64, vectorised=False)
    large = member_bytes(mlp, EXAMPLE, batch_size=1024, vectorised=False)
    assert large > small
    # A CNN's feature maps dwarf an MLP's hidden layer at the same batch size.
    assert member_bytes(cnn, EXAMPLE, batch_size=64, vectorised=False) > 10 * small


def test_evaluation_memory_is_the_cohorts_not_each_members() -> None:
    cnn = models.build("cnn", dropout=0.0)
    # two live outputs of an 8192-image slice: the first convolution's 32 maps of 28x28
    assert evaluation_bytes(cnn, EXAMPLE) == 2 * 8192 * 32 * 28 * 28 * 4


def test_largest_cohort_leaves_headroom() -> None:
    assert largest_cohort(100, 0, 1000) == 9  # 90% of the free memory
    assert largest_cohort(100, 500, 1000) == 4  # beside what the whole cohort shares
    assert largest_cohort(2000, 0, 1000) == 0


def test_evaluation_slices_hold_one_network_s_batch_on_the_cpu() -> None:
    model = models.build("mlp", hidden=128)
    per_image = evaluation_image_bytes(model, torch.zeros(1, 1, 28, 28))
    assert per_image == 2 * 128 * 4  # the hidden layer's output, fp32, kept twice
    cpu = torch.device("cpu")
    assert evaluation_slice(per_image, members=1, images=12_000, device=cpu) == 8192
    assert evaluation_slice(per_image, members=16, images=12_000, device=cpu) == 512
    assert evaluation_slice(per_image, members=128, images=12_000, device=cpu) == 64
    assert evaluation_slice(per_image, members=1, images=500, device=cpu) == 500
    assert evaluation_slice(per_image, members=100_000, images=500, device=cpu) == 1


def test_a_large_gpu_cohort_evaluates_in_slices_of_what_memory_allows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # No GPU here: the one thing taken from a GPU is how much of its memory is free.
    monkeypatch.setattr(memory, "free_bytes", lambda device: 80 * 2**30)
    per_image = 2 * 128 * 4
    gpu = torch.device("cuda")
    # K = 128 MLPs: all 12,000 validation images in one slice, not 188 slices of 64.
    assert evaluation_slice(per_image, members=128, images=12_000, device=gpu) == 12_000
    monkeypatch.setattr(memory, "free_bytes", lambda device: 2**20)  # a nearly full GPU
    assert evaluation_slice(per_image, members=128, images=12_000, device=gpu) == 64
