"""A saved model as an MLflow pyfunc: the loader module of a trial's `model/` MLflow Model.

    input   a DataFrame with a column `audio`: one clip a row, mono float samples in [-1, 1] at 16 kHz
    output  a DataFrame with `label` (the most probable) and one probability column per label, in the
            model's label order (the columns sum to 1)

MLflow calls `_load_pyfunc(<model>/transformers)`; `workers.core.tracking` logs the model and its signature.
No mlflow import here: the model serves wherever this package, torch and transformers import.
"""

from __future__ import annotations

import numpy as np

from workers.vocabulary import ServingColumn

AUDIO_COLUMN = ServingColumn.AUDIO
LABEL_COLUMN = ServingColumn.LABEL


def _load_pyfunc(data_path: str) -> EmotionPredictor:
    from workers.finetune.checkpoint import load_model

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
    from workers.finetune.encoders import INT16_SCALE

    # As predict and the shards: the int16 range is [-32768, 32767], so 1.0 saturates at 32767.
    int16 = np.clip(np.round(np.asarray(samples, dtype=np.float64) * INT16_SCALE), -INT16_SCALE, INT16_SCALE - 1)
    audio = torch.from_numpy(int16.astype(np.int16))[None, :]
    device = next(model.parameters()).device
    with torch.no_grad():
        logits = model.classify(audio.to(device), torch.tensor([audio.shape[1]], device=device)).float()
    return torch.softmax(logits, dim=-1)[0].cpu().numpy().astype(np.float64)


class SavedFinetunedModel:
    """The saved-model interface of workers.kinds (predict): labels, to(device), probabilities(audio)."""

    def __init__(self, model):
        self.model = model
        self.labels = list(model.labels)

    def to(self, device) -> SavedFinetunedModel:
        self.model.to(device).eval()
        return self

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        return clip_probabilities(self.model, np.asarray(audio, dtype=np.float64))


def load_saved_model(directory) -> SavedFinetunedModel:
    from workers.finetune.checkpoint import load_model

    return SavedFinetunedModel(load_model(directory))
