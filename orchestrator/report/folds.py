"""The section 'Folds': mean and spread per configuration over its folds (child tags fold and config_id)."""

from __future__ import annotations

from pathlib import Path

from orchestrator import results
from orchestrator.document import Figure, Heading, Table, Text
from orchestrator.report import plots
from orchestrator.report.cells import held_out_sets, natural
from orchestrator.report.knobs import tuned_knobs
from orchestrator.results import SweepResults, TrialRun
from workers.vocabulary import Key


def fold_section(sweep: SweepResults, out_dir: Path) -> list:
    folded = [t for t in sweep.trials if t.fold is not None and t.config_id is not None]
    if not folded:
        return []
    configs: dict[str, list[TrialRun]] = {}
    for trial in folded:
        configs.setdefault(trial.config_id, []).append(trial)
    config_knobs = [k for k in tuned_knobs(folded) if _constant_within(configs, k)]
    selectable = [t for t in folded if t.selectable(sweep.metric)]
    keys = [Key.of_set(s, Key.ACCURACY) for s in ["val", *held_out_sets(selectable)]]
    header = ["configuration", *config_knobs, "folds", *keys]
    stats = {row["config_id"]: row for row in results.fold_rows(folded)}
    rows = []
    for config_id, trials in sorted(configs.items(), key=lambda item: natural(item[0])):
        row = stats.get(config_id, {"folds": 0, "stats": {}})
        rows.append(
            [
                config_id,
                *[trials[0].params.get(k, "") for k in config_knobs],
                f"{row['folds']}/{len(trials)}",
                *[results.mean_std_text(row["stats"].get(key)) for key in keys],
            ]
        )
    image = "images/folds.png"
    plots.fold_plot(configs, keys, sweep.metric, out_dir / image)
    blocks = [
        Heading(2, "Folds: mean and spread per configuration"),
        Text(
            "Each configuration runs on every fold (a different speaker split). Cells are mean ± standard "
            "deviation over the finished folds (sample std, n-1; one value alone with one fold); points in the "
            "plot are single folds, the black bar is the mean ± std."
        ),
        Table(header, rows, caption="folds: finished / all"),
        Figure([image]),
    ]
    winner = sweep.best(folded)
    if winner is not None:
        mean = stats[winner.config_id]["stats"].get(sweep.metric)
        score = f" ({mean[0]:.3f})" if mean else ""
        blocks.insert(
            2, Text(f"Best configuration by mean `{sweep.metric}` over folds: **{winner.config_id}**{score}.")
        )
    return blocks


def _constant_within(configs: dict[str, list[TrialRun]], key: str) -> bool:
    return all(len({t.params.get(key) for t in ts if t.params}) <= 1 for ts in configs.values())
