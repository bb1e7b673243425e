"""What a resumed trial needs beyond the weights to continue on the uninterrupted trial's path.

As torchtitan and torchtune checkpoint it: every random generator the training loop draws from
(python's `random`, numpy's global one that HF's SpecAugment masks use, torch's CPU generator for
dropout and layerdrop, and each CUDA device's) and the optimizer's state (AdamW's moment estimates
and step counts). The learning rate's adaptive state and the position in the epoch's batch plan are
TrainState fields (workers/finetune/recipe.py).

The generators go into train_state.json (JSON: no code runs when it is read); the optimizer state
into `optimizer.pt`, read with `torch.load(weights_only=True)`, which refuses anything but tensors
and plain containers.
"""

from __future__ import annotations

import base64
import random
from pathlib import Path

import numpy as np
import torch

OPTIMIZER_FILE = "optimizer.pt"


def capture_rng() -> dict:
    """Every generator's state now, as JSON-ready values."""
    kind, keys, position, has_gauss, cached_gauss = np.random.get_state()
    state = {
        "python": _python_state_to_json(random.getstate()),
        "numpy": {
            "kind": kind,
            "keys": keys.tolist(),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gauss": float(cached_gauss),
        },
        "torch": _tensor_to_text(torch.get_rng_state()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [_tensor_to_text(s) for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng(state: dict) -> None:
    """Put every generator back where `capture_rng` found it ({}: leave them as they are)."""
    if not state:
        return
    random.setstate(_python_state_from_json(state["python"]))
    saved = state["numpy"]
    np.random.set_state(
        (
            saved["kind"],
            np.asarray(saved["keys"], dtype=np.uint32),
            saved["position"],
            saved["has_gauss"],
            saved["cached_gauss"],
        )
    )
    torch.set_rng_state(_tensor_from_text(state["torch"]))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available():
        if len(cuda) != torch.cuda.device_count():
            raise ValueError(
                f"the checkpoint holds the random state of {len(cuda)} CUDA device(s), this process sees "
                f"{torch.cuda.device_count()}: resume on the same number of devices"
            )
        torch.cuda.set_rng_state_all([_tensor_from_text(s) for s in cuda])


def clone_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """A host copy of the optimizer's state that later steps leave alone (state_dict() shares its tensors).

    On the host, not the device: AdamW's two moments are twice the trainable weights."""
    return _to_cpu(optimizer.state_dict())


def save_optimizer_state(directory: str | Path, state: dict) -> Path:
    path = Path(directory) / OPTIMIZER_FILE
    torch.save(state, path)
    return path


def load_optimizer_state(directory: str | Path) -> dict | None:
    """The optimizer state saved beside a checkpoint, or None when there is none (a stage boundary)."""
    path = Path(directory) / OPTIMIZER_FILE
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def _to_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(v) for v in value)
    return value


def _tensor_to_text(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.cpu().numpy().tobytes()).decode()


def _tensor_from_text(text: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(text), dtype=np.uint8).copy())


def _python_state_to_json(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_state_from_json(saved: list) -> tuple:
    version, internal, gauss = saved
    return version, tuple(internal), gauss
