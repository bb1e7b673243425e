"""The section 'Best configuration per scenario': one row per scenario, in the sweep's declared order."""

from __future__ import annotations

from orchestrator.document import Heading, Table
from orchestrator.report.cells import config_text, held_out_sets, num
from orchestrator.report.declaration import Declaration
from orchestrator.results import SweepResults, TrialRun
from workers.vocabulary import Key

STATS = (Key.ACCURACY, Key.MACRO_F1)  # per held-out set


def best_summary(
    sweep: SweepResults, chosen: dict[str, TrialRun | None], knobs: list[str], declaration: Declaration
) -> list:
    test_sets = held_out_sets(t for t in chosen.values() if t)

    # A dimensional sweep's held-out sets have a mean CCC (task 'dimensions': instead of accuracy and F1).
    def logged(stat: str) -> bool:
        return any(t.metric(Key.of_set(s, stat)) is not None for t in chosen.values() if t for s in test_sets)

    stats = (*(STATS if logged(Key.ACCURACY) or not logged(Key.CCC) else ()), *((Key.CCC,) if logged(Key.CCC) else ()))
    keys = [Key.of_set(s, stat) for stat in stats for s in test_sets]
    header = ["scenario", "trials", "selected trial", "configuration", sweep.metric, *keys]
    rows = []
    for scenario in sorted(chosen, key=declaration.scenario_key):
        trial = chosen[scenario]
        members = [t for t in sweep.trials if t.scenario == scenario]
        counts = f"{sum(t.selectable(sweep.metric) for t in members)}/{len(members)}"
        if trial is None:
            rows.append([scenario, counts, "none finished", "", "–", *["–"] * len(keys)])
            continue
        rows.append(
            [
                scenario,
                counts,
                trial.trial_id,
                config_text(trial, knobs),
                num(trial.metric(sweep.metric), 3),
                *[num(trial.metric(key), 3) for key in keys],
            ]
        )
    return [
        Heading(2, "Best configuration per scenario"),
        Table(
            header,
            rows,
            caption="trials: finished / all in the scenario; the tables of each selected "
            "trial follow under 'Selected trials in detail'",
        ),
    ]
