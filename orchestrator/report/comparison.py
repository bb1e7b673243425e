"""Several sweeps on the same data side by side: each sweep's best configuration on every held-out set."""

from __future__ import annotations

import time

from orchestrator import results
from orchestrator.document import Document, Heading, Table, Text
from orchestrator.report.cells import config_text, num
from orchestrator.report.knobs import tuned_knobs
from orchestrator.results import TIEBREAK_METRIC
from workers.vocabulary import Key


def comparison_report(rows: list[results.SweepBest]) -> Document:
    document = Document(f"Sweeps compared: {', '.join(row.sweep.name for row in rows)}")
    sweep = rows[0].sweep
    document.add(
        Text(
            f"{len(rows)} sweeps on the same data (hash `{sweep.data_hash[:16]}`), store `{sweep.tracking_uri}`. "
            f"Report written {time.strftime('%Y-%m-%d %H:%M')}."
        ),
        Text(
            "**How each row is chosen.** Each sweep's best trial by the sweep's own metric (validation clips of "
            f"the training speakers; ties: lower `{TIEBREAK_METRIC}`; with folds, a configuration by its mean), "
            "exactly as its own report and summary choose it. The held-out speakers never take part in the choice.",
            kind="note",
        ),
        Heading(2, "Best configuration of each sweep on every held-out set"),
        comparison_table(rows),
    )
    return document


def comparison_table(rows: list[results.SweepBest]) -> Table:
    sets = results.compared_sets(rows)
    header = ["sweep", "kind", "parent run", "selected trial", "configuration", "selected by"]
    header += [Key.of_set(s, stat) for s in sets for stat in results.COMPARED_STATS]
    lines = []
    for row in rows:
        sweep, trial = row.sweep, row.trial
        cells = [sweep.name, sweep.kind, sweep.parent_id[:8]]
        if trial is None:
            cells += ["none finished", "", ""]
        else:
            # Knobs that vary within its scenario: a classifier's own, not the defaults of the others'.
            knobs = tuned_knobs([t for t in sweep.trials if t.scenario == trial.scenario])
            cells += [
                f"{trial.trial_id} ({trial.scenario})",
                config_text(trial, knobs),
                f"{sweep.metric} {num(trial.metric(sweep.metric), 3)}",
            ]
        cells += [num(row.stat(s, stat), 3) for s in sets for stat in results.COMPARED_STATS]
        lines.append(cells)
    return Table(header, lines, caption="uar: unweighted average recall (macro recall); –: not measured")
