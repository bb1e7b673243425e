"""A saved model as an MLflow pyfunc: the loader module of a trial's `model/` MLflow Model.

    input   a DataFrame with a column `audio`: one clip a row, mono float samples in [-1, 1] at 16 kHz
    output  a DataFrame with `label` (the most probable) and one probability column per label, in the
            model's label order (the columns sum to 1)

MLflow calls `_load_pyfunc(<model>/transformers)`; `workers.tracking` logs the model and its signature.
No mlflow import here: the model serves wherever this package, torch and transformers import.
"""

from __future__ import annotations

import numpy as np

AUDIO_COLUMN = "audio"
LABEL_COLUMN = "label"
INT16_MAX = 32767


def _load_pyfunc(data_path: str) -> EmotionPredictor:
    from workers.checkpoint import load_model

    return EmotionPredictor(load_model(data_path).eval())


class EmotionPredictor:
    """What `mlflow.pyfunc.load_model` returns underneath: `predict(DataFrame) -> DataFrame`."""

    def __init__(self, model):
        self.model = model
        self.labels = list(model.labels)

    def predict(self, model_input, params: dict | None = None):
        import pandas as pd

        if AUDIO_COLUMN not in model_input:
            raise ValueError(f"the input needs a column {AUDIO_COLUMN!r} of float samples at 16 kHz")
        rows = []
        for clip in model_input[AUDIO_COLUMN]:
            probabilities = clip_probabilities(self.model, np.asarray(clip, dtype=np.float64))
            best = int(np.argmax(probabilities))
            rows.append({LABEL_COLUMN: self.labels[best], **dict(zip(self.labels, probabilities.tolist()))})
        return pd.DataFrame(rows, columns=[LABEL_COLUMN, *self.labels])


def clip_probabilities(model, samples: np.ndarray) -> np.ndarray:
    """Class probabilities for one clip of float samples in [-1, 1] (16 kHz), as in training (int16, every family)."""
    import torch

    if samples.ndim != 1 or len(samples) == 0:
        raise ValueError(f"a clip is a non-empty list of samples, got shape {samples.shape}")
    audio = torch.from_numpy(np.round(np.clip(samples, -1.0, 1.0) * INT16_MAX).astype(np.int16))[None, :]
    device = next(model.parameters()).device
    with torch.no_grad():
        logits = model.classify(audio.to(device), torch.tensor([audio.shape[1]], device=device)).float()
    return torch.softmax(logits, dim=-1)[0].cpu().numpy().astype(np.float64)
