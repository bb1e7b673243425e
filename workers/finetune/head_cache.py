"""The frozen-stage cache: pooled encoder outputs, computed once, shared by every trial on a node.

A head-only stage never changes the encoder, so each clip's pooled vector is the same every epoch
and in every trial that starts from the same weights. They are computed once with the encoder in
eval mode (dropout, layerdrop and time masking off: the same features the uncached path feeds the
head when `frozen_encoder_dropout` is False) and stored under a hash of
(encoder family, encoder weights, layer choice, pooling, corpus content hash, rows, crop), so
different encoders, or different layers of one encoder, never share an entry:

    <feature_cache_dir>/<key>.npz   rows (int64, sorted), features (float32 [rows, hidden])

Writers take a file lock and rename atomically, so concurrent trials compute an entry once.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from workers.core.file_lock import locked
from workers.finetune.config import ENCODER_CONFIG_FIELDS

# Config entries that do not change eval-mode outputs (regularisation) or only describe provenance.
_NOT_IN_FINGERPRINT = {
    *ENCODER_CONFIG_FIELDS,
    "apply_spec_augment",
    "_name_or_path",
    "transformers_version",
    "architectures",
    "final_dropout",
    "feat_extract_dropout",
}
_SAMPLES_PER_TENSOR = 256


def default_cache_dir() -> Path:
    root = Path(os.environ.get("EMOTION_SWEEP_CACHE", Path.home() / ".cache" / "emotion-sweep"))
    return root / "features"


@torch.no_grad()
def encoder_fingerprint(encoder: nn.Module) -> str:
    """A content hash of the encoder: architecture, and per tensor its shape, sums and strided samples.

    Hashing every byte of XLSR-53 (1.3 GB) would cost seconds; any training step moves the sums
    and samples of the tensors it updates, and a different checkpoint differs everywhere.
    """
    digest = hashlib.sha256()
    config = {k: v for k, v in encoder.config.to_dict().items() if k not in _NOT_IN_FINGERPRINT}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        if name == "masked_spec_embed":
            continue  # exists only when time masking is on; unused in eval mode
        flat = tensor.detach().reshape(-1)
        stride = max(1, flat.numel() // _SAMPLES_PER_TENSOR)
        summary = torch.cat(
            [
                flat[::stride][:_SAMPLES_PER_TENSOR].double(),
                flat.sum(dtype=torch.float64).reshape(1),
                flat.abs().sum(dtype=torch.float64).reshape(1),
            ]
        )
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(summary.cpu().numpy().tobytes())
    return digest.hexdigest()


def feature_key(
    family: str,
    encoder_id: str,
    layer: int | str,
    pooling: str,
    content_hash: str,
    rows: np.ndarray,
    max_samples: int,
) -> str:
    """The cache entry of pooled features: what the encoder is (family, weights), which of its hidden
    states is pooled (`layer`: 'last' or an index) and how, and which clips of which corpus, cropped how."""
    rows_hash = hashlib.sha256(np.ascontiguousarray(np.sort(rows), dtype=np.int64).tobytes()).hexdigest()
    text = json.dumps([family, encoder_id, str(layer), pooling, content_hash, rows_hash, int(max_samples)])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _read(path: Path, rows: np.ndarray) -> np.ndarray | None:
    if not path.exists():
        return None
    with np.load(path) as stored:
        if not np.array_equal(stored["rows"], rows):
            return None  # a hash collision or a foreign file: recompute
        return stored["features"]


def cached_features(
    directory: str | Path, key: str, rows: np.ndarray, compute: Callable[[], np.ndarray]
) -> tuple[np.ndarray, str]:
    """Features of sorted `rows` from the cache, or computed once (under a lock) and stored.

    Returns (features, 'hit' | 'computed').
    """
    path = Path(directory) / f"{key}.npz"
    features = _read(path, rows)
    if features is not None:
        return features, "hit"
    with locked(path.with_suffix(".lock")):
        features = _read(path, rows)  # another trial may have finished it while we waited
        if features is not None:
            return features, "hit"
        features = np.asarray(compute(), dtype=np.float32)
        temporary = path.with_name(f"{key}.{os.getpid()}.tmp.npz")
        np.savez(temporary, rows=rows, features=features)
        os.replace(temporary, path)
    return features, "computed"
