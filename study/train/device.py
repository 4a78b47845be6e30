from __future__ import annotations

import logging

import torch

from study.errors import DeviceError

logger = logging.getLogger(__name__)


def resolve_device(requested: str) -> torch.device:
    """'auto' means CUDA when present, else CPU. An explicit 'cuda' or 'cuda:N' never falls
    back: a GPU that is not there is an error."""
    if requested == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif requested.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(
            f"--device {requested} was requested but torch {torch.__version__} sees no CUDA "
            f"device; use --device cpu or --device auto"
        )
    else:
        device = torch.device(requested)
    if device.type == "cuda" and device.index is not None \
            and device.index >= torch.cuda.device_count():
        raise DeviceError(
            f"--device {requested} was requested but torch sees {torch.cuda.device_count()} "
            f"CUDA device(s), numbered from 0 (CUDA_VISIBLE_DEVICES renumbers them)")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    logger.info("device: %s (%s, torch %s)", device, name, torch.__version__)
    return device
