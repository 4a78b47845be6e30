from __future__ import annotations

import logging

import torch

from study.errors import DeviceError

logger = logging.getLogger(__name__)


def resolve_device(requested: str) -> torch.device:
    """'auto' means CUDA when present, else CPU. An explicit 'cuda' never falls back."""
    if requested == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif requested == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            f"--device cuda was requested but torch {torch.__version__} sees no CUDA device; "
            f"use --device cpu or --device auto"
        )
    else:
        device = torch.device(requested)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    logger.info("device: %s (%s, torch %s)", device, name, torch.__version__)
    return device
