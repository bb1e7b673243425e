"""The section 'All trials': every trial ranked, unfinished ones last, with each failure's error."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.document import Details, Heading, Table, Text
from orchestrator.report.cells import clip, held_out_sets, num
from orchestrator.results import SweepResults, TrialRun
from workers.vocabulary import Key, Tag


def trials_section(sweep: SweepResults, knobs: list[str]) -> list:
    ordered = sweep.ranked()
    columns = _Columns(
        scenario=len(sweep.scenarios) > 1,
        error=any(t.error for t in ordered),
        attempt=any(t.attempt > 1 for t in ordered),
        keys=[Key.of_set(s, Key.ACCURACY) for s in held_out_sets(ordered)],
    )
    header = [
        "rank",
        "trial",
        "status",
        *(["attempt"] if columns.attempt else []),
        *(["scenario"] if columns.scenario else []),
        *knobs,
        sweep.metric,
        *columns.keys,
        "minutes",
        *(["error"] if columns.error else []),
    ]
    rows = []
    rank = 0
    for trial in ordered:
        rank += trial.selectable(sweep.metric)
        rows.append(_row(trial, str(rank) if trial.selectable(sweep.metric) else "–", knobs, sweep.metric, columns))
    blocks: list = [
        Heading(2, "All trials"),
        Text(
            f"Best first by `{sweep.metric}`; unfinished trials last (a running trial shows its latest "
            "values)."
            + (" Failed trials' errors are below the table." if columns.error else "")
            + (
                f" A retried trial's values are its last attempt's (column attempt); in MLflow, the run's "
                f"`{Tag.attempt_started(2)}` (and later) tags say when each attempt started, so which logged a step."
                if columns.attempt
                else ""
            )
        ),
        Table(header, rows),
    ]
    for trial in ordered:
        if trial.error:
            blocks.append(
                Details(
                    f"{trial.trial_id} ({trial.status}): {clip(trial.error_line, 120)}",
                    "\n".join(trial.error.strip().splitlines()[-25:]),
                )
            )
    return blocks


@dataclass(frozen=True)
class _Columns:
    """The table's optional columns (each shown only when some trial has something in it), and its metrics."""

    scenario: bool
    error: bool
    attempt: bool
    keys: list[str]  # each held-out set's accuracy


def _row(trial: TrialRun, rank: str, knobs: list[str], metric: str, columns: _Columns) -> list[str]:
    minutes = (trial.end_time - trial.start_time) / 60_000 if trial.end_time and trial.start_time else None
    return [
        rank,
        trial.trial_id,
        trial.status,
        *([str(trial.attempt)] if columns.attempt else []),
        *([trial.scenario] if columns.scenario else []),
        *[trial.params.get(k, "") for k in knobs],
        num(trial.metric(metric), 3),
        *[num(trial.metric(key), 3) for key in columns.keys],
        num(minutes, 1),
        *([clip(trial.error_line, 60)] if columns.error else []),
    ]
