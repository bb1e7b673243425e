"""What every trial kind's typed config shares: the speaker-split checks and plain-value coercion.

Import-light (no numpy, torch or scikit-learn), so the driver can validate a sweep's keys and
values without importing training code.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing


def validate_split_config(
    train_speakers: tuple[str, ...], eval_sets: dict[str, tuple[str, ...]], val_fraction: float
) -> None:
    """The checks TrialConfig makes on the same fields."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not train_speakers:
        raise ValueError("train_speakers must name at least one speaker")
    if not eval_sets:
        raise ValueError("eval_sets must name at least one held-out set")
    overlap = {s for speakers in eval_sets.values() for s in speakers} & set(train_speakers)
    if overlap:
        raise ValueError(f"speakers {sorted(overlap)} are in both training and a held-out set")


def check_key(cls: type, key: str) -> str:
    """`key` when it is a field of `cls`; ValueError naming the closest field otherwise."""
    names = [f.name for f in dataclasses.fields(cls)]
    if key in names:
        return key
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(names)}"
    raise ValueError(f"unknown {cls.__name__} key {key!r}{hint}")


def plain_values(cls: type, values: dict) -> dict:
    """`values` (JSON or Tune: lists for tuples, ints for floats) as `cls`'s fields declare them."""
    hints = typing.get_type_hints(cls)
    coerced = {}
    for key, value in values.items():
        hint = hints[check_key(cls, key)]
        if typing.get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)
        elif typing.get_origin(hint) is dict and isinstance(value, dict):
            value = {k: tuple(v) for k, v in value.items()}
        elif hint is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        coerced[key] = value
    return coerced
