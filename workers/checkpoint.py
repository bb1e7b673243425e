"""A fine-tuned model on disk: safetensors weights plus the configs that rebuild it.

    <dir>/model.safetensors   encoder + pooler + head weights (LoRA: adapters + pooler + head only)
    <dir>/encoder_config.json the encoder's config, any family (so no hub access is needed to reload)
    <dir>/head.json           labels, head dropout, pooling, layer; LoRA: settings and the base's id + revision
    <dir>/train_state.json    (Tune checkpoints only) where the trial was when this was its best
A checkpoint describes itself: `load_model(dir)` needs nothing else. Used for a trial's best model
(Tune storage and MLflow artifact `model/`), for `init_from` (e.g. transfer_zh's English base),
for resuming a trial (`run_trial(resume_dir=...)`) and by `orchestrator.predict`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from workers import encoders
from workers.model import EmotionClassifier, build_encoder

WEIGHTS_FILE = "model.safetensors"
ENCODER_CONFIG_FILE = "encoder_config.json"
HEAD_FILE = "head.json"
TRAIN_STATE_FILE = "train_state.json"
# Created only when time masking is on; a checkpoint saved with masking off lacks it.
MASK_EMBEDDING = "encoder.masked_spec_embed"


def save_model(
    model: EmotionClassifier, directory: str | Path, state_dict: dict[str, torch.Tensor] | None = None
) -> Path:
    """Write `model` (or `state_dict`, e.g. a kept best state, in `model`'s architecture) to `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = state_dict if state_dict is not None else model.state_dict()
    lora_base = lora_base_of(model)
    if lora_base:
        weights = {k: v for k, v in weights.items() if not k.startswith("encoder.") or "lora_" in k}
    save_file({k: v.detach().to("cpu").contiguous() for k, v in weights.items()}, str(directory / WEIGHTS_FILE))
    (directory / ENCODER_CONFIG_FILE).write_text(model.encoder.config.to_json_string())
    head = {
        "labels": list(model.labels),
        "pooling": model.pooling,
        "head_dropout": model.head.dropout.p,
        "layer": model.layer,
    }
    if encoders.has_lora(model.encoder):
        head["lora"] = {**model.encoder.lora_settings, "base": lora_base}
    (directory / HEAD_FILE).write_text(json.dumps(head))
    return directory


def lora_base_of(model: EmotionClassifier) -> dict | None:
    """The pretrained base a LoRA model's saved adapters apply to, or None when the whole model must be saved.

    Adapters alone suffice while the base is a loadable checkpoint (hub id or directory) that no
    stage has trained; a random config start or a trained base is saved in full.
    """
    source = getattr(model.encoder, "pretrained_source", None)
    if not encoders.has_lora(model.encoder) or source is None or model.encoder_weights_trained:
        return None
    return dict(source)


def is_model_dir(directory: str | Path) -> bool:
    return (Path(directory) / WEIGHTS_FILE).exists() and (Path(directory) / ENCODER_CONFIG_FILE).exists()


def load_model(
    directory: str | Path,
    map_location: str | torch.device = "cpu",
    encoder_overrides: dict | None = None,
    weights_dir: str = "",
) -> EmotionClassifier:
    """Rebuild a saved model; `encoder_overrides` replace its encoder's regularisation settings.

    A LoRA checkpoint that holds adapters only loads its base (by id and revision, from `weights_dir`
    when given; shared through workers.model.PRETRAINED) and puts the adapters on it.
    """
    directory = Path(directory)
    if not is_model_dir(directory):
        raise FileNotFoundError(
            f"{directory} is not a saved emotion model (needs {WEIGHTS_FILE} and {ENCODER_CONFIG_FILE})"
        )
    encoder_config = encoders.config_from_dict(json.loads((directory / ENCODER_CONFIG_FILE).read_text()))
    head = json.loads((directory / HEAD_FILE).read_text())
    lora = head.get("lora")
    base = (lora or {}).get("base")
    if base:
        encoder = build_encoder(base["source"], encoder_overrides, revision=base["revision"], weights_dir=weights_dir)
    else:
        encoder = build_encoder(encoder_config, encoder_overrides)
    if lora:
        encoders.add_lora(encoder, lora["rank"], lora["alpha"], lora["target"])
    model = EmotionClassifier(
        encoder,
        labels=tuple(head["labels"]),
        head_dropout=head["head_dropout"],
        pooling=head.get("pooling", "mean"),
        layer=head.get("layer", "last"),
    )
    weights = load_file(str(directory / WEIGHTS_FILE), device=str(map_location))
    expected = model.state_dict()
    if base:  # adapters only: the base's own weights come from the loaded base
        weights = {**{k: v for k, v in expected.items() if k.startswith("encoder.")}, **weights}
    if MASK_EMBEDDING not in expected:
        weights.pop(MASK_EMBEDDING, None)
    elif MASK_EMBEDDING not in weights:
        weights[MASK_EMBEDDING] = expected[MASK_EMBEDDING]  # masking newly on: keep the fresh embedding
    model.load_state_dict(weights)
    return model


def save_train_state(directory: str | Path, state: dict) -> Path:
    path = Path(directory) / TRAIN_STATE_FILE
    path.write_text(json.dumps(state, indent=1))
    return path


def load_train_state(directory: str | Path) -> dict:
    path = Path(directory) / TRAIN_STATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{directory} has no {TRAIN_STATE_FILE}: it is not a resumable trial checkpoint")
    return json.loads(path.read_text())
