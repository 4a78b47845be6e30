"""The memory estimate that caps --cohort-size."""

from __future__ import annotations

import torch

import models
from study.train.cohort.memory import evaluation_bytes, largest_cohort, member_bytes

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
