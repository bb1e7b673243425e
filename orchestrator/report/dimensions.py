"""The section 'Dimensional emotion': per selected trial, the CCC table per set and predicted-vs-true scatter plots.

Present when a selected trial predicted dimensions (task 'dimensions' or 'both'): its `<set>/<dimension>/ccc`
metrics make the table (with the mean CCC, `<set>/ccc`, and PCC and MAE beside), and its
`dimension_predictions_<set>.json` artifacts (true and predicted value of every clip) the scatter plots.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from orchestrator import tracking
from orchestrator.document import Figure, Heading, Table
from orchestrator.report.cells import num, slug
from orchestrator.report.declaration import Declaration
from orchestrator.report.plots import pyplot, save
from orchestrator.results import SweepResults, TrialRun
from workers.vocabulary import Key

DIMENSION_CCC = re.compile(rf"^([^/]+)/([^/]+)/{Key.CCC}$")
ORDER = ("arousal", "valence", "dominance")  # shards.schema.DIMENSIONS, the order tables and plots follow


def dimensions_of(trial: TrialRun) -> tuple[list[str], list[str]]:
    """(the sets, the dimensions) a trial has `<set>/<dimension>/ccc` for; val first, then by name."""
    found = [m.groups() for key in trial.metrics if (m := DIMENSION_CCC.match(key))]
    sets = sorted({s for s, _ in found}, key=lambda s: (s != "val", s))
    names = {d for _, d in found}
    return sets, [d for d in ORDER if d in names] + sorted(names - set(ORDER))


def ccc_table(trial: TrialRun, caption: str = "") -> Table | None:
    """One row per set: CCC per dimension, their mean, then PCC and MAE per dimension."""
    sets, names = dimensions_of(trial)
    if not sets:
        return None
    header = [
        "set",
        *(f"{d} CCC" for d in names),
        "mean CCC",
        *(f"{d} PCC" for d in names),
        *(f"{d} MAE" for d in names),
    ]
    rows = []
    for set_name in sets:
        cells = [num(trial.metric(Key.dimension_metric(set_name, d, Key.CCC)), 3) for d in names]
        cells.append(num(trial.metric(Key.set_metric(set_name, Key.CCC)), 3))
        cells += [num(trial.metric(Key.dimension_metric(set_name, d, Key.PCC)), 3) for d in names]
        cells += [num(trial.metric(Key.dimension_metric(set_name, d, Key.MAE)), 2) for d in names]
        rows.append([set_name, *cells])
    return Table(header, rows, caption=caption)


def dimension_section(
    client, sweep: SweepResults, chosen: dict[str, TrialRun | None], out_dir: Path, declaration: Declaration
) -> list:
    blocks: list = []
    for scenario in sorted(chosen, key=declaration.scenario_key):
        trial = chosen[scenario]
        table = ccc_table(trial, f"{scenario}, trial {trial.trial_id}: CCC, PCC and MAE per set") if trial else None
        if table is None:
            continue
        blocks += [Heading(3, f"{scenario}: trial {trial.trial_id}"), table]
        sets, names = dimensions_of(trial)
        predictions = {s: p for s in sets if (p := fetch_predictions(client, trial, s)) is not None}
        if predictions:
            path = out_dir / "images" / f"{slug(scenario)}_{trial.trial_id}_dimensions.png"
            scatter_plot(predictions, names, f"{scenario}, trial {trial.trial_id}", path)
            blocks.append(
                Figure([str(path.relative_to(out_dir))], caption="predicted against true value per clip; line: y = x")
            )
    if not blocks:
        return []
    return [Heading(2, f"Dimensional emotion (ranked by `{sweep.metric}`)"), *blocks]


def fetch_predictions(client, trial: TrialRun, set_name: str) -> dict | None:
    """A trial's logged true and predicted values of one set ({dimension: {"true": [...], "predicted": [...]}})."""
    with tempfile.TemporaryDirectory() as tmp:
        logged = tracking.download_if_logged(client, trial.run_id, Key.dimension_predictions(set_name), tmp)
        return json.loads(logged.read_text()) if logged is not None else None


def scatter_plot(predictions: dict[str, dict], names: list[str], title: str, path: Path) -> None:
    """One panel per dimension, one colour per set: predicted against true, the identity line for reference."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        low, high = float("inf"), float("-inf")
        for set_name, record in predictions.items():
            pairs = [(t, p) for t, p in zip(record[name]["true"], record[name]["predicted"]) if t is not None]
            if not pairs:
                continue
            true, predicted = zip(*pairs)
            ax.scatter(true, predicted, s=10, alpha=0.6, label=set_name)
            low, high = min(low, *true, *predicted), max(high, *true, *predicted)
        if low < high:
            ax.plot([low, high], [low, high], color="grey", linewidth=1)
        ax.set_xlabel(f"true {name}")
        ax.set_ylabel(f"predicted {name}")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    save(fig, path)
