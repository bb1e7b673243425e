"""What every trial kind's typed config shares: the speaker-split checks, key names (aliases resolved)
and typed values (coerced and checked).

Import-light (no numpy, torch or scikit-learn), so the driver can validate a sweep's keys and
values without importing training code.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable


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


def check_key(cls: type, key: str, aliases: dict[str, str] | None = None) -> str:
    """The field of `cls` that `key` (or its alias) names; ValueError naming the closest field otherwise."""
    aliases = aliases or {}
    key = aliases.get(key, key)
    names = [f.name for f in dataclasses.fields(cls)]
    if key in names:
        return key
    close = difflib.get_close_matches(key, [*names, *aliases], n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(names)}"
    raise ValueError(f"unknown {cls.__name__} key {key!r}{hint}")


def canonical_values(values: dict, key: Callable[[str], str]) -> dict:
    """`values` under the fields their keys name (`key`: aliases resolved); an alias beside its own
    field is an error."""
    renamed: dict = {}
    for name, value in values.items():
        field_name = key(name)
        if field_name in renamed:
            raise ValueError(f"config key {field_name!r} given twice (once as {name!r})")
        renamed[field_name] = value
    return renamed


def coerce(cls: type, name: str, value):
    """`value` as `cls`'s field `name` declares it: JSON and Tune lists back to tuples (also of an optional
    tuple), ints to floats, 'true'/'false' (any case, as a shell user types them) to booleans."""
    hint = typing.get_type_hints(cls)[name]
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType) and isinstance(value, list):
        if any(typing.get_origin(arg) is tuple for arg in typing.get_args(hint)):
            return tuple(value)
    if hint is bool and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if origin is dict and isinstance(value, dict):
        return {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def check_type(cls: type, name: str, value) -> None:
    """ValueError naming the key and the expected type when `value` cannot be `cls`'s field `name`."""
    hint = typing.get_type_hints(cls)[name]
    if not _matches(hint, value):
        expected = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
        raise ValueError(f"config key {name!r} expects {expected}, got {value!r} ({type(value).__name__})")


def typed_value(cls: type, name: str, value):
    """`value` as `cls`'s field `name` holds it (`coerce`), checked against the field's type (`check_type`)."""
    value = coerce(cls, name, value)
    check_type(cls, name, value)
    return value


def plain_values(cls: type, values: dict, aliases: dict[str, str] | None = None) -> dict:
    """`values` (JSON or Tune: lists for tuples, ints for floats; aliases) as `cls`'s fields declare them."""
    values = canonical_values(values, lambda key: check_key(cls, key, aliases))
    return {key: coerce(cls, key, value) for key, value in values.items()}


def _matches(hint, value) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(arg, value) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is not None:
        return isinstance(value, origin)
    return isinstance(value, hint)
