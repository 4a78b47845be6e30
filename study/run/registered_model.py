"""The code of the registered model: MLflow runs this file whenever the model is loaded.

Models-from-code instead of a pickled module: the architecture is built by the `models`
package (shipped with the model as a code path) from the model config, and the weights are a
plain state-dict file read with `torch.load(weights_only=True)`, which admits tensors and
primitive containers only. Loading therefore unpickles nothing that could run code, and works
with MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false.

This file travels alone (copied into the model's artifacts): it imports torch, numpy, mlflow and
`models`, never `study`, so the model loads where mnist-study is not installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.pyfunc import PythonModel, PythonModelContext
from torch import nn

import models

WEIGHTS_ARTIFACT = "weights"  # the artifact key MlflowTracker.log_study_model stores it under
ARCHITECTURE_KEY = "architecture"  # the model config's key for models.build's arguments


def load_network(weights_path: str, config: Mapping[str, Any]) -> nn.Module:
    """models.build(CONFIG['model'], **other keys) with the state dict at WEIGHTS_PATH, on the
    CPU, in eval mode."""
    kwargs = dict(config)
    name = kwargs.pop("model")
    network = models.build(name, **kwargs)
    network.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    return network.eval()  # dropout off: predictions are what the test evaluation saw


class MnistClassifier(PythonModel):
    """pyfunc face of the network: float32 [N, 1, 28, 28] normalised images -> [N, 10] logits.
    `.model` is the nn.Module itself (unwrap_python_model().model)."""

    model: nn.Module

    def load_context(self, context: PythonModelContext) -> None:
        architecture = (context.model_config or {}).get(ARCHITECTURE_KEY)
        if not architecture:
            raise ValueError(f"the model config names no architecture, but got "
                             f"{context.model_config=}")
        self.model = load_network(context.artifacts[WEIGHTS_ARTIFACT], architecture)

    def predict(self, context: PythonModelContext, model_input: np.ndarray,
                params: dict[str, Any] | None = None) -> np.ndarray:
        device = next(self.model.parameters()).device  # wherever the user moved the module
        with torch.inference_mode():
            logits = self.model(torch.from_numpy(np.asarray(model_input)).to(device))
        return logits.cpu().numpy()  # [N, 10]


mlflow.models.set_model(MnistClassifier())
