"""--init-from, checked on the driver before any trial: a saved model directory, or an MLflow model that exists
(a run id, runs:/ or models:/ URI), an alias pinned to its version so that every trial starts from the same model."""

from __future__ import annotations

from pathlib import Path

from orchestrator import tracking
from workers.vocabulary import Key


def resolve_init_from(value: str, tracking_uri: str) -> str:
    """--init-from as a location trials can read: a model directory, or a `runs:/` or `models:/` URI."""
    from workers.finetune.checkpoint import is_model_dir, resolve_model_dir

    local = Path(value).expanduser()
    if local.exists():
        if not is_model_dir(resolve_model_dir(local)):
            raise ValueError(f"--init-from {value}: not a saved emotion model (no config.json and model.safetensors)")
        return str(local.resolve())
    uri = value if value.startswith(("runs:/", "models:/")) else f"runs:/{value}/{Key.MODEL_DIR}"
    try:
        found = tracking.model_uri_exists(tracking_uri, uri)
    except tracking.StoreError as error:
        raise ValueError(
            f"--init-from {value}: neither a directory nor an MLflow model in {tracking_uri} ({error})"
        ) from None
    if not found:
        raise ValueError(f"--init-from {value}: {uri} holds no model")
    return tracking.pin_model_version(tracking_uri, uri)  # an alias that moves mid-sweep changes no trial
