"""How many members fit: the memory one member of a cohort needs, estimated before any is built.

A cohort's memory grows with K: every member brings its weights, their gradient, its optimizer
state and its activations. The estimate runs the network once on the meta device (shapes
only, no memory, no arithmetic), so a --cohort-size that cannot fit is refused in one line
before the first trial, instead of failing mid-study with an out-of-memory error.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from study.train.training import EVAL_BATCH_SIZE

HEADROOM = 0.9  # of the free memory: the allocator's rounding and fragmentation take the rest
# Of a GPU's memory free when a cohort evaluates, what its slices may hold: the rest stays for
# the allocator's cache and whatever else shares the device.
EVALUATION_SHARE = 0.25


def member_bytes(model: nn.Module, example: torch.Tensor, *, batch_size: int,
                 vectorised: bool) -> int:
    """Bytes one member of MODEL's architecture adds to a cohort training at BATCH_SIZE.

    Weights, gradient and optimizer state (Adam's two moments; the vectorised update's three
    work tensors when VECTORISED), a training step's activations (each module's output, kept
    for the backward pass, and its gradient) and the member's gathered batch of images.
    EXAMPLE: one input [1, ...], as the network takes it.
    """
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    copies = 4 + (3 if vectorised else 0)  # weights, gradient, exp_avg, exp_avg_sq, work
    images = batch_size * example[0].numel() * 4  # float32
    return weights * copies + 2 * sum(_outputs(model, example, batch_size)) + images


def evaluation_bytes(model: nn.Module, example: torch.Tensor) -> int:
    """Bytes a cohort's evaluation needs whatever its size: its slices hold at least
    EVAL_BATCH_SIZE images' outputs across all members (evaluation_slice), of which the two
    largest layers' are alive at once. (On a GPU they may take more: a share of what is free
    when they run.)"""
    return 2 * max(_outputs(model, example, EVAL_BATCH_SIZE))


def evaluation_image_bytes(model: nn.Module, example: torch.Tensor) -> int:
    """Bytes one image's evaluation holds for one member of MODEL's architecture (its two
    largest layers' outputs)."""
    return 2 * max(_outputs(model, example, 1))


def evaluation_slice(image_bytes: int, *, members: int, images: int,
                     device: torch.device) -> int:
    """Images per slice of a cohort's evaluation of IMAGES images by MEMBERS members, each
    image taking IMAGE_BYTES per member. Everywhere the slices hold as much as one network's
    EVAL_BATCH_SIZE images would (EVAL_BATCH_SIZE // MEMBERS images each: a CNN's first maps
    of 8192 images are 0.8 GB, and 16 members' would be 13 GB); on a GPU, up to
    EVALUATION_SHARE of the memory free now, so that a large cohort still evaluates in few,
    large slices instead of thousands of small ones."""
    budget = EVAL_BATCH_SIZE * image_bytes
    free = free_bytes(device) if device.type == "cuda" else None
    if free is not None:
        budget = max(budget, int(free * EVALUATION_SHARE))
    return max(1, min(images, budget // max(members * image_bytes, 1)))


def free_bytes(device: torch.device) -> int | None:
    """Memory free for a cohort on DEVICE now; None where this cannot be known."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            meminfo = Path("/proc/meminfo").read_text()
        except OSError:
            return None  # not Linux: no check rather than a guess
        for line in meminfo.splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def largest_cohort(per_member: int, shared: int, free: int) -> int:
    """The most members of PER_MEMBER bytes that fit, beside SHARED bytes, in HEADROOM of
    FREE bytes."""
    return max(int((free * HEADROOM - shared) // max(per_member, 1)), 0)


def _outputs(model: nn.Module, example: torch.Tensor, batch_size: int) -> list[int]:
    """Bytes of the leaf modules' outputs on a batch of BATCH_SIZE, from a meta-device pass,
    from the first module with weights on: what comes before (a Flatten of the inputs) is a
    view, or, in evaluation, the same for every member (their inputs are shared)."""
    sizes: list[int] = []
    meta = copy.deepcopy(model).to("meta").eval()  # eval: dropout draws nothing on meta

    def record(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        if sizes or any(True for _ in module.parameters()):
            sizes.append(output.numel() * 4)  # float32 (under bf16 autocast, an overestimate)

    for module in meta.modules():
        if not list(module.children()):
            module.register_forward_hook(record)
    with torch.no_grad():
        meta(torch.empty((batch_size, *example.shape[1:]), device="meta"))
    return sizes or [0]
