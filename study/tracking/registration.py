"""The study's best model, logged to MLflow as a pyfunc model and registered."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

ARCHITECTURE_KEY = "architecture"  # the model config's one key (study/run/registered_model.py)


def register_model(client: Any, model: torch.nn.Module, *, tracking_uri: str,
                   experiment_id: str, run_id: str, registered_name: str,
                   input_example: np.ndarray, params: Mapping[str, Any],
                   metadata: Mapping[str, Any], model_code: Path,
                   model_config: Mapping[str, Any], code_paths: Sequence[Path]) -> str:
    """MODEL as an MLflow pyfunc model of run RUN_ID, registered as a new version of
    REGISTERED_NAME; returns its models:/ URI. MODEL must be on the CPU in eval mode.

    Models-from-code, nothing pickled: MODEL_CODE (a file calling mlflow.models.set_model)
    rebuilds the network from MODEL_CONFIG with the CODE_PATHS shipped beside it, and reads
    MODEL's state dict, stored as the artifact 'weights', with torch.load(weights_only=True).
    """
    import mlflow.pyfunc
    import mlflow.pytorch
    from mlflow.models import Model, infer_signature

    with torch.inference_mode():
        output = model(torch.from_numpy(input_example)).numpy()
    # Created here, in the study's experiment: log_model alone would pick the fluent one.
    logged = client.create_logged_model(
        experiment_id, name="model", source_run_id=run_id,
        params={k: str(v) for k, v in params.items()})
    with tempfile.TemporaryDirectory() as tmp, _global_tracking_uri(tracking_uri):
        weights = Path(tmp) / "weights.pt"
        torch.save(model.state_dict(), weights)
        # Model.log is what pyfunc.log_model calls, minus the fluent run: it takes run_id.
        # MLflow prints "Successfully registered model..." itself; the runner says it once.
        with contextlib.redirect_stderr(io.StringIO()):
            info = Model.log(
                artifact_path=None, name="model", flavor=mlflow.pyfunc,
                # Under one key: MLflow also logs the config as run params, flattened, and
                # `architecture/dropout` stays apart from the trials' `dropout` in the UI.
                python_model=str(model_code),
                model_config={ARCHITECTURE_KEY: dict(model_config)},
                artifacts={"weights": str(weights)}, code_paths=[str(p) for p in code_paths],
                model_id=logged.model_id, run_id=run_id,
                signature=infer_signature(input_example, output), input_example=input_example,
                registered_model_name=registered_name, metadata=dict(metadata),
                # Stated, not inferred: inference re-imports the model in a subprocess (slow).
                pip_requirements=mlflow.pytorch.get_default_pip_requirements(),
            )
    return f"models:/{registered_name}/{info.registered_model_version}"


@contextmanager
def _global_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's process-global tracking URI at URI for one call, then restore it.

    mlflow's Model.log and the registration it does read only the global URI. This runs
    once per study, after the search, when no trial is logging from another thread.
    """
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    previous_env = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        # MLflow mirrors the global into the environment and unsets it on the way out.
        if previous_env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env
