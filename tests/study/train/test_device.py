from __future__ import annotations

import pytest
import torch

from study.errors import DeviceError
from study.train.device import resolve_device


def test_auto_and_cpu_resolve_to_what_the_machine_has() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("requested", ["cuda", "cuda:0", "cuda:7"])
def test_a_gpu_that_is_not_there_is_an_error_never_the_cpu(requested: str) -> None:
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if requested != "cuda" and int(requested.split(":")[1]) < count:
        pytest.skip(f"this machine has GPU {requested}")
    if requested == "cuda" and count:
        pytest.skip("this machine has a GPU")
    with pytest.raises(DeviceError, match=f"--device {requested} was requested"):
        resolve_device(requested)
