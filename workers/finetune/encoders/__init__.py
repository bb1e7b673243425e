"""Speech encoder families behind one interface: int16 audio batches in, frame features and a frame mask out.

    waveform/  wav2vec2 (incl. XLS-R and MMS), hubert, wavlm, data2vec-audio: normalised waveform, HF attention mask.
    whisper/   log-mel computed on the device (WhisperFeatureExtractor's filters and scaling), the encoder
               run on the batch's own length (positional embeddings sliced), padded frames masked.
    registry.py  the Family declaration and the lookups (import-light: the trial config reads the starts)
    parts.py     freeze parts; lora.py LoRA adapters; loading.py configs and checkpoints; figures.py plots

A family is detected from the config's `model_type`; only the encoder is built, so a checkpoint's task
head (CTC, pretraining, sequence classification, Whisper's decoder) is dropped on load. Each family
names its conv front end and its transformer, so a freeze part (head, transformer, all_but_cnn, all,
lora) means the same in every family.

Adding a family: a folder here with its `Family(...)` (model class, forward pass, tiny config, starts),
and one `register_family(...)` line below. The trial config's starts, the model's random starts, the
encoders sweep and bench/encoders.py read the registry.

Import-light: this module loads the declarations only; the torch side (forward passes, freeze parts,
LoRA, loading) loads on first use of one of its names (`encoders.encode`, `encoders.add_lora`, ...).
"""

from __future__ import annotations

import importlib

from workers.finetune.encoders import waveform, whisper
from workers.finetune.encoders.registry import (  # noqa: F401 (the package's interface)
    FAMILIES,
    NAMED_STARTS,
    RANDOM_STARTS,
    Family,
    encode,
    family_named,
    family_of,
    hidden_size,
    layerdrop,
    num_layers,
    num_states,
    register_family,
    regularisation_overrides,
    supported_model_types,
    tiny_config,
    unregister_family,
)
from workers.finetune.encoders.waveform import tiny_encoder_config, xlsr53_encoder_config  # noqa: F401

# The families, one line each.
register_family(waveform.WAV2VEC2)
register_family(waveform.HUBERT)
register_family(waveform.WAVLM)
register_family(waveform.DATA2VEC_AUDIO)
register_family(whisper.WHISPER)

# The torch side, loaded on first use: name -> the module under this package that defines it.
_LAZY = {
    "normalize_audio": "waveform.forward",
    "encode_waveform": "waveform.forward",
    "whisper_log_mel": "whisper.forward",
    "run_whisper_encoder": "whisper.forward",
    "INT16_SCALE": "whisper.forward",
    "frontend_modules": "parts",
    "transformer_modules": "parts",
    "unfreeze_encoder_part": "parts",
    "sync_requires_grad": "parts",
    "add_lora": "lora",
    "has_lora": "lora",
    "lora_parameters": "lora",
    "lora_target_modules": "lora",
    "load_config": "loading",
    "config_from_dict": "loading",
    "load_pretrained_encoder": "loading",
    "layer_weights_figure": "figures",
}


def __getattr__(name: str):
    if name == "SUPPORTED_MODEL_TYPES":  # live: a family registered later counts
        return supported_model_types()
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, "SUPPORTED_MODEL_TYPES"})
