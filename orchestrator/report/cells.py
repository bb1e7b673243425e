"""How the report writes numbers, configurations and times into its tables and sentences."""

from __future__ import annotations

import math
import re
import time

from orchestrator.results import SweepResults, TrialRun


def num(value: float | None, digits: int = 2) -> str:
    """A number to `digits` decimals; '–' for none (not measured) or NaN."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def blank(value: float | None) -> str:
    """A number to 2 decimals; empty for none (a cell the paper's table leaves empty)."""
    return "" if value is None else num(value)


def as_float(raw: str | None) -> float | None:
    """A logged param as a finite number; None for 'None', text, inf and NaN."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def natural(text: str) -> list:
    """Sort key that orders 'fold 2' before 'fold 10'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(text))]


def slug(text: str) -> str:
    """`text` as a file name part."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def when(millis: int | None) -> str:
    """A run's time (ms since the epoch) in local time, to the minute."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(millis / 1000)) if millis else "?"


def status_summary(sweep: SweepResults) -> str:
    return ", ".join(f"{n} {status.lower()}" for status, n in sweep.count_by_status().items())


def held_out_sets(trials) -> list[str]:
    """Held-out test sets present in any of the trials, by name."""
    return sorted({s for t in trials for s in t.test_sets})


def config_text(trial: TrialRun, knobs: list[str]) -> str:
    return ", ".join(f"{k}={trial.params.get(k, '?')}" for k in knobs)
