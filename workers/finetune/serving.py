"""A saved model as an MLflow pyfunc: the loader module of a trial's `model/` MLflow Model.

    input   a DataFrame with a column `audio`: one clip a row, mono float samples in [-1, 1] at 16 kHz
    output  a DataFrame with `label` (the most probable) and one probability column per label, in the
            model's label order (the columns sum to 1); a dimensional model (task 'dimensions' or 'both')
            adds one column per dimension (arousal, valence, ...: the value on the training corpus's scale),
            and one of task 'dimensions' answers those columns only

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
        self.labels = answered_labels(model)
        self.dimensions = list(getattr(model, "dimensions", ()))

    def predict(self, model_input, params: dict | None = None):
        import pandas as pd

        if AUDIO_COLUMN not in model_input:
            raise ValueError(f"the input needs a column {AUDIO_COLUMN!r} of float samples at 16 kHz")
        rows = []
        for clip in model_input[AUDIO_COLUMN]:
            probabilities, values = clip_outputs(self.model, np.asarray(clip, dtype=np.float64))
            row = dict(zip(self.dimensions, values.tolist()))
            if self.labels:
                row.update({LABEL_COLUMN: self.labels[int(np.argmax(probabilities))]})
                row.update(zip(self.labels, probabilities.tolist()))
            rows.append(row)
        label = [LABEL_COLUMN] if self.labels else []
        return pd.DataFrame(rows, columns=[*label, *self.labels, *self.dimensions])


def answered_labels(model) -> list[str]:
    """The labels a model answers probabilities for: none for a model trained on dimensions only."""
    return [] if getattr(model, "task", "categorical") == "dimensions" else list(model.labels)


def clip_probabilities(model, samples: np.ndarray) -> np.ndarray:
    """Class probabilities for one clip of float samples in [-1, 1] (16 kHz), as in training (int16, every family)."""
    return clip_outputs(model, samples)[0]


def clip_outputs(model, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class probabilities, the value of each dimension: empty without) for one clip, as `clip_probabilities`."""
    import torch

    if samples.ndim != 1 or len(samples) == 0:
        raise ValueError(f"a clip is a non-empty list of samples, got shape {samples.shape}")
    from workers.finetune.encoders import INT16_SCALE

    # As predict and the shards: the int16 range is [-32768, 32767], so 1.0 saturates at 32767.
    int16 = np.clip(np.round(np.asarray(samples, dtype=np.float64) * INT16_SCALE), -INT16_SCALE, INT16_SCALE - 1)
    audio = torch.from_numpy(int16.astype(np.int16))[None, :]
    device = next(model.parameters()).device
    with torch.no_grad():
        outputs = model.classify(audio.to(device), torch.tensor([audio.shape[1]], device=device)).float()[0].cpu()
    num_labels = len(model.labels)
    probabilities = torch.softmax(outputs[:num_labels], dim=-1).numpy().astype(np.float64)
    return probabilities, outputs[num_labels:].numpy().astype(np.float64)


class SavedFinetunedModel:
    """The saved-model interface of workers.kinds (predict): labels, to(device), probabilities(audio)."""

    def __init__(self, model):
        self.model = model
        self.labels = answered_labels(model)
        self.dimensions = tuple(getattr(model, "dimensions", ()))

    def to(self, device) -> SavedFinetunedModel:
        self.model.to(device).eval()
        return self

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        return clip_probabilities(self.model, np.asarray(audio, dtype=np.float64))

    def values(self, audio: np.ndarray) -> np.ndarray:
        """A dimensional model's value per dimension (in `dimensions` order) for one clip."""
        return clip_outputs(self.model, np.asarray(audio, dtype=np.float64))[1]


def load_saved_model(directory) -> SavedFinetunedModel:
    from workers.finetune.checkpoint import load_model

    return SavedFinetunedModel(load_model(directory))
