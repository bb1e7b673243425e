"""A fine-tuned model on disk: safetensors weights plus the configs that rebuild it.

    <dir>/model.safetensors   encoder + head weights
    <dir>/encoder_config.json the Wav2Vec2Config (so no hub access is needed to reload)
    <dir>/head.json           labels, head dropout, pooling
A checkpoint describes itself: `load_model(dir)` needs nothing else. Used for a trial's best model
(Tune storage and MLflow artifact `model/`), for `init_from` (e.g. transfer_zh's English base),
and by `orchestrator.predict`.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import Wav2Vec2Config

from workers.model import EmotionClassifier, build_encoder

WEIGHTS_FILE = "model.safetensors"
ENCODER_CONFIG_FILE = "encoder_config.json"
HEAD_FILE = "head.json"


def save_model(model: EmotionClassifier, directory: str | Path, head_dropout: float) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    (directory / ENCODER_CONFIG_FILE).write_text(model.encoder.config.to_json_string())
    (directory / HEAD_FILE).write_text(json.dumps({"labels": model.labels, "head_dropout": head_dropout}))
    return directory


def is_model_dir(directory: str | Path) -> bool:
    return (Path(directory) / WEIGHTS_FILE).exists() and (Path(directory) / ENCODER_CONFIG_FILE).exists()


def load_model(directory: str | Path, map_location: str | torch.device = "cpu") -> EmotionClassifier:
    directory = Path(directory)
    if not is_model_dir(directory):
        raise FileNotFoundError(f"{directory} is not a saved emotion model (needs {WEIGHTS_FILE} and {ENCODER_CONFIG_FILE})")
    encoder_config = Wav2Vec2Config.from_json_file(str(directory / ENCODER_CONFIG_FILE))
    head = json.loads((directory / HEAD_FILE).read_text())
    model = EmotionClassifier(build_encoder(encoder_config), num_labels=len(head["labels"]),
                              head_dropout=head["head_dropout"])
    model.load_state_dict(load_file(str(directory / WEIGHTS_FILE), device=str(map_location)))
    model.labels = head["labels"]
    return model
