"""Train-only augmentation: random affine transforms of whole batches, on the device.

One affine matrix per image, drawn on the CPU from the trial's own generator once per epoch
(after the epoch's batch order), so a trial's images move the same way on every device and
inside a cohort as alone; then, per batch, one sampling grid and one `grid_sample` wherever the
batch lives: no PIL, no per-image loop. Only training batches pass through here; validation
and test tensors never do.

Kinds: "rotate" turns each image by up to ±degrees; "affine" also shifts it by up to ±translate
of its side and scales it by 1 ± scale. Sampling is nearest-neighbour, torchvision's default
for RandomRotation and RandomAffine (the seed's RandomRotation(10) used it), and pixels moved
in from outside the image are background (a black pixel, normalised as the fold normalises),
not 0, which after normalisation is grey.

Cost: torch's affine_grid took longer than the whole step it served; the grid here is built
from one row and one column per image (an affine map is separable: x' = a*x + b*y + c), a
tenth of that, and nearest-neighbour sampling costs a third of bilinear's (python -m
study.bench.augment; docs/benchmarks.md, "Measurements behind the code's choices").
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch.nn import functional as F

# The draws per image, whatever the kind: a kind that uses fewer still consumes them, so that
# a generator's later numbers do not depend on which kind drew before.
_DRAWS = 4


@dataclass(frozen=True)
class Augmentation:
    """One trial's augmentation: its KIND (search_space.AUGMENTS) and strengths."""

    kind: str = "none"
    degrees: float = 0.0  # rotation, each way
    translate: float = 0.0  # shift, as a fraction of the image side, each way ("affine")
    scale: float = 0.0  # scale drawn from [1 - scale, 1 + scale] ("affine")

    @classmethod
    def from_params(cls, kind: str, params: Mapping[str, float]) -> Augmentation:
        """From a trial's parameters (search_space: aug_degrees, aug_translate, aug_scale)."""
        return cls(kind=kind, degrees=float(params.get("aug_degrees", 0.0)),
                   translate=float(params.get("aug_translate", 0.0)),
                   scale=float(params.get("aug_scale", 0.0)))

    @property
    def active(self) -> bool:
        return self.kind != "none"

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """N affine matrices [N, 2, 3] (affine_grid's: output to input coordinates) on the
        CPU, from GENERATOR."""
        u = torch.rand(n, _DRAWS, generator=generator, dtype=torch.float64) * 2 - 1  # [-1, 1)
        angle = u[:, 0] * math.radians(self.degrees)
        affine = self.kind == "affine"
        scale = 1 + u[:, 1] * (self.scale if affine else 0.0)
        # affine_grid's coordinates run from -1 to 1: a shift of one side is 2.
        shift = u[:, 2:] * (2 * self.translate if affine else 0.0)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], dim=1),
                             torch.stack([sin, cos, shift[:, 1]], dim=1)], dim=1)
        return theta.to(torch.float32)


def transform(x: torch.Tensor, theta: torch.Tensor, background: float) -> torch.Tensor:
    """Images X [N, C, H, W] moved by THETA [N, 2, 3] (affine_grid's convention; any device:
    it follows X), nearest-neighbour, with BACKGROUND where an image has no pixel to bring in."""
    _, _, height, width = x.shape
    grid = sampling_grid(theta.to(x.device, x.dtype), height, width)
    moved = F.grid_sample(x - background, grid, mode="nearest", padding_mode="zeros",
                          align_corners=False)
    return moved.add_(background)


def sampling_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """affine_grid(THETA, [N, C, HEIGHT, WIDTH], align_corners=False), built separably: [N, H,
    W, 2] on THETA's device and dtype."""
    xs, ys = _centres(width, theta.device, theta.dtype), _centres(height, theta.device,
                                                                   theta.dtype)
    cols = theta[:, :, 0:1] * xs  # [N, 2, W]: each output coordinate's share from x
    rows = torch.addcmul(theta[:, :, 2:3], theta[:, :, 1:2], ys)  # [N, 2, H]: from y, + shift
    return (cols.unsqueeze(2) + rows.unsqueeze(3)).permute(0, 2, 3, 1)  # [N, H, W, 2]


@functools.cache
def _centres(size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Pixel centres along a side of SIZE in [-1, 1] (align_corners=False), as affine_grid
    places them; kept, since a step's other ops are about as small as building them."""
    return torch.arange(size, device=device, dtype=dtype).mul_(2).add_(1).div_(size).sub_(1)
