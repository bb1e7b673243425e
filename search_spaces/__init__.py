"""Named sweeps: one small declarative module each, exposing `SWEEP: SweepSpec`.

`python -m orchestrator.sweep NAME` loads `search_spaces.NAME`.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SweepSpec:
    """A named sweep: fixed config values, the Tune search space over the rest, and how to rank trials."""

    name: str
    description: str
    base: dict  # TrialConfig values shared by every trial
    space: dict  # TrialConfig field -> Tune domain (tune.grid_search, tune.loguniform, ...)
    metric: str = "val/accuracy"  # ranks trials; held-out test sets are reported, never tuned on
    mode: str = "max"
    num_samples: int = 1
    presets: dict[str, dict] = field(default_factory=dict)  # e.g. "tiny": overrides for CPU runs
    default_preset: str | None = None  # applied when no --preset is given


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def load(name: str) -> SweepSpec:
    if name not in available():
        raise ValueError(f"no sweep named {name!r}; available: {', '.join(available())}")
    return importlib.import_module(f"{__name__}.{name}").SWEEP
