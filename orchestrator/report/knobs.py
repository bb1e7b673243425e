"""Which config values are tuned knobs, and the section that relates them to the metric."""

from __future__ import annotations

from pathlib import Path

from orchestrator.document import Figure, Heading, Text
from orchestrator.report import plots
from orchestrator.report.cells import held_out_sets
from orchestrator.results import SweepResults, TrialRun
from workers.vocabulary import ConfigKey, Key

# Config values that are not tuned knobs: where things are, and the speaker split (a fold's identity).
NOT_KNOBS = ConfigKey.NOT_KNOBS  # the one list, shared with the trial grid (workers.vocabulary)
NOT_KNOB_PREFIXES = ("eval_sets.", "tracking")
MAX_KNOB_ROWS = 4  # knobs plotted, one row each


def tuned_knobs(trials: list[TrialRun]) -> list[str]:
    """Config values that differ among the trials (bookkeeping and speaker splits left out)."""
    keys = sorted({k for t in trials for k in t.params})
    knobs = []
    for key in keys:
        if key in NOT_KNOBS or key.startswith(NOT_KNOB_PREFIXES):
            continue
        values = {t.params.get(key) for t in trials if t.params}
        if len(values) > 1:
            knobs.append(key)
    return knobs


def knob_section(sweep: SweepResults, chosen: dict[str, TrialRun | None], knobs: list[str], out_dir: Path) -> list:
    finished = [t for t in sweep.trials if t.selectable(sweep.metric)]
    blocks: list = [Heading(2, "How the tuned knobs relate to the metric")]
    if not knobs:
        return blocks + [Text("No configuration value varies among the trials: nothing to relate.")]
    if not finished:
        return blocks + [Text(f"Knobs that vary: {', '.join(f'`{k}`' for k in knobs)}. No finished trial yet.")]
    plotted = knobs[:MAX_KNOB_ROWS]
    sets = ["val", *held_out_sets(finished)]
    image = "images/knobs.png"
    keys = [Key.of_set(s, Key.ACCURACY) for s in sets]
    plots.knob_plot(finished, plotted, keys, {t.run_id for t in chosen.values() if t}, out_dir / image)
    left_out = (
        f" (not plotted: {', '.join(f'`{k}`' for k in knobs[MAX_KNOB_ROWS:])})" if len(knobs) > MAX_KNOB_ROWS else ""
    )
    return blocks + [
        Text(
            f"Knobs that vary among the trials: {', '.join(f'`{k}`' for k in knobs)}{left_out}. Each row puts one "
            "knob on the x axis and colours the points by the other knobs; each column is one set's accuracy of "
            "every finished trial. Stars mark the trials selected above. `val` is what ranks; the held-out "
            "columns show whether that choice carries over to unseen speakers."
        ),
        Figure([image]),
    ]
