"""A fine-tuned model on disk: a transformers model directory (save_pretrained / from_pretrained).

    <dir>/config.json         EmotionModelConfig: the encoder's config (any family, so no hub access is
                              needed to reload), pooling, layer, head, labels (id2label), LoRA settings and base
    <dir>/model.safetensors   encoder + pooler + head weights (LoRA: adapters + pooler + head only)
    <dir>/preprocessor_config.json, modeling_emotion_sweep.py   for Hugging Face users (workers.finetune.hub)
    <dir>/README.md           (a trial's final model) its model card (workers.finetune.hub.card)
    <dir>/train_state.json    (Tune checkpoints only) where the trial was when this was its best, with
                              every random generator's state
    <dir>/optimizer.pt        (Tune checkpoints inside a stage) AdamW's state (workers/finetune/resume_state.py)
A checkpoint describes itself: `load_model(dir)` (or, once `workers.finetune.model` is imported,
`AutoModelForAudioClassification.from_pretrained(dir)`) needs nothing else; `load_model` also takes the
MLflow Model directory a trial logs (`model/`, with this directory as `model/transformers/`).
Used for a trial's best model (Tune storage and the MLflow Model `model/`), for `init_from`
(e.g. transfer_zh's English base), for resuming a trial (`run_trial(resume_dir=...)`) and by
`orchestrator.predict`. Directories of the earlier layout (encoder_config.json + head.json) still load.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from workers.finetune.encoders.lora import has_lora
from workers.finetune.hub import write_hub_files
from workers.finetune.model import MODEL_TYPE, EmotionClassifier, EmotionModelConfig, config_dict
from workers.vocabulary import Key

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TRAIN_STATE_FILE = "train_state.json"
MLFLOW_MODEL_FILE = "MLmodel"
# The earlier layout: the encoder's config and the head's settings in two files.
LEGACY_ENCODER_CONFIG_FILE = "encoder_config.json"
LEGACY_HEAD_FILE = "head.json"


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
    # The config describes the encoder as it is now (regularisation, attention kernel) and what the file holds.
    model.config.encoder = config_dict(model.encoder.config)
    model.config.lora = {**model.encoder.lora_settings, "base": lora_base} if has_lora(model.encoder) else None
    hf_logging.disable_progress_bar()  # one bar per checkpoint would fill a trial's log
    model.save_pretrained(directory, state_dict={k: v.detach().to("cpu").contiguous() for k, v in weights.items()})
    write_hub_files(directory)  # the feature extractor and the code a Hugging Face user loads it with
    return directory


def lora_base_of(model: EmotionClassifier) -> dict | None:
    """The pretrained base a LoRA model's saved adapters apply to, or None when the whole model must be saved.

    Adapters alone suffice while the base is a loadable checkpoint (hub id or directory) that no
    stage has trained; a random config start or a trained base is saved in full.
    """
    source = getattr(model.encoder, "pretrained_source", None)
    if not has_lora(model.encoder) or source is None or model.encoder_weights_trained:
        return None
    return dict(source)


def resolve_model_dir(directory: str | Path) -> Path:
    """A model directory itself, or the one inside an MLflow Model (a trial's `model/` artifact): its pyfunc data."""
    directory = Path(directory)
    if is_model_dir(directory) or not (directory / MLFLOW_MODEL_FILE).exists():
        return directory
    import yaml

    flavor = yaml.safe_load((directory / MLFLOW_MODEL_FILE).read_text()).get("flavors", {}).get("python_function", {})
    return directory / flavor.get("data", Key.TRANSFORMERS_DIR)


def is_model_dir(directory: str | Path) -> bool:
    directory = Path(directory)
    if not (directory / WEIGHTS_FILE).exists():
        return False
    if (directory / CONFIG_FILE).exists():
        return json.loads((directory / CONFIG_FILE).read_text()).get("model_type") == MODEL_TYPE
    return (directory / LEGACY_ENCODER_CONFIG_FILE).exists()


def load_model(
    directory: str | Path,
    map_location: str | torch.device = "cpu",
    encoder_overrides: dict | None = None,
    weights_dir: str = "",
) -> EmotionClassifier:
    """Rebuild a saved model; `encoder_overrides` replace its encoder's regularisation settings.

    A LoRA checkpoint that holds adapters only loads its base (by id and revision, from `weights_dir`
    when given; shared through workers.finetune.model.PRETRAINED) and puts the adapters on it.
    """
    directory = resolve_model_dir(directory)
    if not is_model_dir(directory):
        raise FileNotFoundError(
            f"{directory} is not a saved emotion model (needs {WEIGHTS_FILE} and a {CONFIG_FILE} "
            f"of model_type {MODEL_TYPE!r})"
        )
    config = saved_config(directory)
    if encoder_overrides:
        config.encoder = config_dict(config.encoder_config(encoder_overrides))
    model = EmotionClassifier.from_pretrained(directory, config=config, weights_dir=weights_dir)
    return model.to(map_location)


def saved_config(directory: Path) -> EmotionModelConfig:
    """The directory's config.json, or one built from the earlier layout's two files."""
    if (directory / CONFIG_FILE).exists():
        return EmotionModelConfig.from_pretrained(directory)
    head = json.loads((directory / LEGACY_HEAD_FILE).read_text())
    return EmotionModelConfig(
        encoder=json.loads((directory / LEGACY_ENCODER_CONFIG_FILE).read_text()),
        pooling=head.get("pooling", "mean"),
        layer=head.get("layer", "last"),
        head_dropout=head["head_dropout"],
        lora=head.get("lora"),
        id2label=dict(enumerate(head["labels"])),
    )


def save_train_state(directory: str | Path, state: dict) -> Path:
    path = Path(directory) / TRAIN_STATE_FILE
    path.write_text(json.dumps(state, indent=1))
    return path


def load_train_state(directory: str | Path) -> dict:
    path = Path(directory) / TRAIN_STATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{directory} has no {TRAIN_STATE_FILE}: it is not a resumable trial checkpoint")
    return json.loads(path.read_text())
