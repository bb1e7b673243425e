"""The section 'Encoders': EmoBox's encoder table when the sweep's trials start from more than one encoder."""

from __future__ import annotations

from orchestrator import results
from orchestrator.document import Heading, Table, Text
from orchestrator.report.cells import config_text
from orchestrator.report.declaration import Declaration
from orchestrator.report.knobs import tuned_knobs
from orchestrator.results import SweepResults
from workers.vocabulary import Key

# The recipe each encoder was selected with (fine-tuning config keys), shown before whatever else its
# scenario tunes; `start` is the row itself.
RECIPE_KNOBS = ["learning_rate", "schedule"]
START_KNOB = "start"


def encoder_section(sweep: SweepResults, declaration: Declaration) -> list:
    """EmoBox's encoder table (UA, WA, macro F1; mean ± std over folds) when the sweep varies `start`."""
    if not results.varies_start(sweep.trials):
        return []
    rows = results.encoder_rows(sweep.trials, sweep.metric, sweep.mode)
    test_sets = sorted({key.split("/")[0] for row in rows for key in row.stats})
    scenario_knobs = {
        scenario: RECIPE_KNOBS
        + [
            k
            for k in tuned_knobs([t for t in sweep.trials if t.scenario == scenario])
            if k not in {START_KNOB, *RECIPE_KNOBS}
        ]
        for scenario in {row.scenario for row in rows}
    }
    header = [
        "scenario",
        "encoder (start)",
        "family",
        "selected trial",
        "configuration",
        "folds",
        *[f"{s} {label}" for s in test_sets for _, label in results.EMOBOX_STATS],
    ]
    cells = []
    for row in sorted(rows, key=lambda r: (declaration.scenario_key(r.scenario), r.start)):
        selected = row.selected
        cells.append(
            [
                row.scenario,
                row.start,
                row.family or "?",
                selected.trial_id if selected else "none finished",
                config_text(selected, scenario_knobs[row.scenario]) if selected else "",
                f"{row.folds}",
                *[
                    results.mean_std_text(row.stats.get(Key.of_set(s, stat)))
                    for s in test_sets
                    for stat, _ in results.EMOBOX_STATS
                ],
            ]
        )
    return [
        Heading(2, "Encoders"),
        Text(
            "Per encoder, its best configuration by the sweep's rule (on validation clips, never the test sets), "
            "in EmoBox's form: UA = unweighted accuracy (mean recall over emotions), WA = weighted accuracy "
            "(accuracy over clips), macro F1; mean ± sample std over the configuration's finished folds."
        ),
        Table(header, cells, caption="folds: finished runs of the selected configuration"),
    ]
