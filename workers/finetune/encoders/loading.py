"""Configs and weights of any registered family from a checkpoint, a saved dict or the hub (transformers)."""

from __future__ import annotations

from torch import nn
from transformers import AutoConfig, PretrainedConfig

from workers.finetune.encoders.registry import FAMILIES, family_named, family_of


def load_config(source: str, **options) -> PretrainedConfig:
    """A checkpoint's config, checked to be one of the supported families."""
    config = AutoConfig.from_pretrained(source, **options)
    family_of(config)
    return config


def config_from_dict(values: dict) -> PretrainedConfig:
    """A config saved with to_json_string (workers.finetune.checkpoint's encoder_config.json), by its model_type."""
    model_type = values.get("model_type", "wav2vec2")
    if model_type not in FAMILIES:
        family_named(model_type)  # raises the error that names the families
    return AutoConfig.for_model(**values)


def load_pretrained_encoder(source: str, config: PretrainedConfig, **options) -> nn.Module:
    """The bare encoder of a checkpoint; whatever task head it carries is left unloaded."""
    family = family_of(config)
    if family.key_mapping:
        options["key_mapping"] = family.key_mapping
    return family.model_cls().from_pretrained(source, config=config, **options)
