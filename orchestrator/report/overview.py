"""The report's opening: where the sweep's runs are, how far it got, and how runs are selected."""

from __future__ import annotations

import time

from orchestrator.document import Text
from orchestrator.report.cells import status_summary, when
from orchestrator.results import TIEBREAK_METRIC, SweepResults
from workers.vocabulary import RunStatus, Tag


def overview(sweep: SweepResults) -> list:
    tags = sweep.parent_tags
    facts = [
        f"Parent run `{sweep.parent_id}` ({sweep.parent_name}) in experiment `{sweep.experiment_name}`, "
        f"store `{sweep.tracking_uri}`.",
        f"Started {when(sweep.parent_start_time)}"
        + (f", ended {when(sweep.parent_end_time)}" if sweep.parent_end_time else "")
        + f"; parent status **{sweep.parent_status}**; trials: {status_summary(sweep)}.",
    ]
    if tags.get(Tag.DATA_HASH) or tags.get(Tag.GIT_COMMIT):
        facts.append(f"Data hash `{tags.get(Tag.DATA_HASH, '?')[:16]}`, code `{tags.get(Tag.GIT_COMMIT, '?')[:12]}`.")
    if tags.get(Tag.COMMAND):
        facts.append(f"Command: `{tags[Tag.COMMAND]}`.")
    facts.append(f"Report written {time.strftime('%Y-%m-%d %H:%M')}.")
    blocks: list = [Text(" ".join(facts))]
    unfinished = [t for t in sweep.trials if t.status != RunStatus.FINISHED]
    if sweep.parent_status == RunStatus.RUNNING or unfinished:
        listed = ", ".join(f"{t.trial_id} {t.status}" for t in unfinished[:8]) + (" …" if len(unfinished) > 8 else "")
        blocks.append(
            Text(
                f"This sweep is partial: {len(unfinished)} of {len(sweep.trials)} trial(s) are not finished "
                f"({listed}). "
                "Only finished trials are ranked; the others appear in the trial table at the end.",
                kind="warning",
            )
        )
    blocks.append(
        Text(
            f"**How runs are selected.** Within each scenario, finished trials are ranked by `{sweep.metric}` "
            f"({'higher' if sweep.mode == 'max' else 'lower'} is better; ties: lower `{TIEBREAK_METRIC}`), measured "
            "on held-out clips of the *training* speakers; with folds, a configuration by its mean over folds. "
            "Trials stopped early never win. The held-out-speaker test sets never take part in the choice; the "
            "test numbers below are those of the selected runs.",
            kind="note",
        )
    )
    return blocks
