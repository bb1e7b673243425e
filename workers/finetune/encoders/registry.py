"""The encoder-family registry: what differs between families, declared once per family, and the lookups.

Import-light (no torch, no transformers at import): the trial config, the driver's preflight and the
named sweeps read the starts from here. What needs torch (the model class, the forward pass, a tiny
config) is named as "module:attribute" or a function that imports it when called.

A family is a folder under workers/finetune/encoders/ (its Family, its tiny config, its starts, its
forward pass) plus one `register_family(...)` line in workers/finetune/encoders/__init__.py.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

# A function building a PretrainedConfig with random weights in mind (no download); it imports transformers.
ConfigBuilder = Callable[[], Any]


@dataclass(frozen=True, kw_only=True)
class Family:
    """What differs between encoder families; everything else goes through one code path."""

    model_type: str  # the config's model_type, by which a checkpoint's family is detected
    model_class: str  # "module:Class" of the bare encoder (no task head)
    # "module:function": (encoder, int16 audio [batch, samples], lengths, all_layers) -> (hidden states, frame mask)
    encode: str
    log_mel_input: bool = False  # True: takes log-mel (Whisper), not the normalised waveform of `forward`
    frontend: tuple[str, ...]  # attributes of the conv front end (frozen in all_but_cnn)
    transformer: tuple[str, ...]  # attributes trained in the `transformer` stage
    attention: tuple[str, ...]  # attention projections (LoRA targets)
    feed_forward: tuple[str, ...]  # feed-forward projections (optional LoRA targets)
    # The config's names of its width, depth and layerdrop.
    hidden_size_name: str = "hidden_size"
    num_layers_name: str = "num_hidden_layers"
    layerdrop_name: str = "layerdrop"
    # TrialConfig regularisation names -> this config's names; a name absent here does not apply.
    # None: the config uses TrialConfig's names (ENCODER_CONFIG_FIELDS, apply_spec_augment), as wav2vec2's does.
    config_names: dict[str, str] | None = None
    # Checkpoint key rewrites that find the encoder inside a model that carries more (Whisper's decoder).
    key_mapping: dict[str, str] | None = None
    always_frozen: tuple[str, ...] = ()  # fixed tensors that no stage trains (Whisper's sinusoids)
    # data2vec's positional embedding is a stack of convs: padded frames must be zeroed between them.
    stacked_position_convs: bool = False
    # Starts: random weights from a config (no download), by name; one of them is the family's tiny config
    # (width 64, 2 layers: tests, the encoders sweep's tiny preset). Named checkpoints: start name -> hub id.
    random_starts: dict[str, ConfigBuilder] = field(default_factory=dict)
    tiny_start: str = ""
    named_starts: dict[str, str] = field(default_factory=dict)
    sweep_start: str = ""  # the named start the encoders sweep compares ("": not in the sweep)
    bench_config: ConfigBuilder | None = None  # small but real-shaped (20 ms frames, width 256): bench/encoders.py

    def __post_init__(self) -> None:
        if self.tiny_start not in self.random_starts:
            raise ValueError(
                f"family {self.model_type!r}: tiny_start {self.tiny_start!r} is not one of its random_starts"
            )
        if self.sweep_start and self.sweep_start not in self.named_starts:
            raise ValueError(f"family {self.model_type!r}: sweep_start {self.sweep_start!r} is not a named start")

    def build(self, config):
        """The bare encoder with random weights (torch's current generator)."""
        return self.model_cls()(config)

    def model_cls(self):
        return resolve(self.model_class)

    def tiny_config(self):
        return self.random_starts[self.tiny_start]()


FAMILIES: dict[str, Family] = {}


def resolve(target: str):
    """The attribute a "module:attribute" string names (imported now)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def register_family(family: Family) -> Family:
    """Add a family; its start names must be new (a start names one family)."""
    if family.model_type in FAMILIES:
        raise ValueError(f"encoder family {family.model_type!r} is registered already")
    taken = set(RANDOM_STARTS) | set(NAMED_STARTS)
    clashing = sorted(taken & ({*family.random_starts, *family.named_starts}))
    if clashing:
        raise ValueError(f"family {family.model_type!r}: start names {clashing} belong to another family already")
    FAMILIES[family.model_type] = family
    return family


def unregister_family(model_type: str) -> None:
    FAMILIES.pop(model_type, None)


def supported_model_types() -> tuple[str, ...]:
    return tuple(FAMILIES)


def family_named(model_type: str) -> Family:
    if model_type not in FAMILIES:
        raise ValueError(
            f"unsupported encoder model_type {model_type!r}; supported families: {', '.join(supported_model_types())}"
        )
    return FAMILIES[model_type]


def family_of(config) -> Family:
    """The family of an encoder config (by its model_type)."""
    return family_named(getattr(config, "model_type", ""))


def tiny_config(model_type: str):
    """The family's small random config: width 64, 2 layers, 10 ms conv frames (Whisper: 20 ms)."""
    return family_named(model_type).tiny_config()


def regularisation_overrides(config, overrides: dict | None) -> dict:
    """TrialConfig's regularisation values under this family's config names (inapplicable ones dropped)."""
    names = family_of(config).config_names
    if names is None:
        return dict(overrides or {})
    return {names[name]: value for name, value in (overrides or {}).items() if name in names}


# --- sizes ---


def hidden_size(config) -> int:
    return getattr(config, family_of(config).hidden_size_name)


def num_layers(config) -> int:
    return getattr(config, family_of(config).num_layers_name)


def layerdrop(config) -> float:
    return getattr(config, family_of(config).layerdrop_name)


def num_states(config) -> int:
    """Hidden states an encoder returns: the embedding output plus one per transformer layer."""
    return num_layers(config) + 1


def encode(encoder, audio, lengths, all_layers: bool = False):
    """int16 [batch, samples] + lengths -> (hidden states, frame mask [batch, frames] bool), for every family.

    The states are every layer's output (embedding output first, the last one after the final
    norm) when `all_layers`, else just the last.
    """
    return resolve(family_of(encoder.config).encode)(encoder, audio, lengths, all_layers)


# --- starts, over every registered family (live: a family registered later shows up) ---


class _Starts(Mapping):
    """Start name -> what the family declares for it (a config builder, or a hub id)."""

    def __init__(self, attribute: str):
        self._attribute = attribute

    def _merged(self) -> dict:
        return {name: value for family in FAMILIES.values() for name, value in getattr(family, self._attribute).items()}

    def __getitem__(self, name: str):
        return self._merged()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._merged())

    def __len__(self) -> int:
        return len(self._merged())

    def __repr__(self) -> str:
        return f"{self._attribute}({', '.join(self)})"


# Starts built from a config with random weights (no download): start name -> config builder.
RANDOM_STARTS: Mapping[str, ConfigBuilder] = _Starts("random_starts")
# Named start checkpoints: start name -> hub id.
NAMED_STARTS: Mapping[str, str] = _Starts("named_starts")
