"""The driver's end-of-sweep summary, as text: written from the sweep's results (`orchestrator.results`).

- the trial table, best first by the one rule (`results.ranked`: complete configurations by their mean
  over folds, then trials of configurations with folds missing, each with how many folds finished);
- with folds: mean and sample std per configuration (`config_id`);
- the best configuration per scenario in the paper's table form (per-class precision, recall, F1,
  support; accuracy; macro and weighted averages), one table per held-out set.
"""

from __future__ import annotations

from orchestrator.results import (
    PaperRow,
    SweepResults,
    TrialRun,
    configurations,
    mean_std_text,
    paper_table,
    paper_table_text,
)
from workers.vocabulary import Key, Tag

TABLE_LIMIT = 40
FOLDS_DONE = "folds_done"  # the trial's configuration: folds finished / folds it runs on


def trials_table(sweep: SweepResults, tuned: list[str], folds: bool) -> str:
    import pandas as pd

    if not sweep.trials:
        return "(no trial ran)"
    rows = []
    retried = any(t.attempt > 1 for t in sweep.trials)
    progress = {id(t): c.progress for c in configurations(sweep.trials, sweep.metric) for t in c.runs}
    for trial in sweep.ranked():
        row = {Tag.TRIAL_ID: trial.trial_id, Tag.SCENARIO: trial.scenario, "status": trial.status}
        if retried:  # the values are the last attempt's
            row[Tag.ATTEMPT] = trial.attempt
        if folds:
            row[Tag.FOLD] = trial.fold or ""
            row[FOLDS_DONE] = progress.get(id(trial), "")  # an incomplete configuration is never ranked best
        row.update({k: trial.params.get(k, "") for k in tuned})
        row[sweep.metric] = trial.metric(sweep.metric)
        for s in trial.test_sets:  # a categorical set's accuracy, a dimensional set's mean CCC
            stat = Key.CCC if trial.metric(Key.of_set(s, Key.ACCURACY)) is None else Key.ACCURACY
            row[Key.of_set(s, stat)] = trial.metric(Key.of_set(s, stat))
        row[Key.TRIAL_SECONDS] = trial.metric(Key.TRIAL_SECONDS)
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame.head(TABLE_LIMIT).to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-")


def fold_table(rows: list[dict], params_of: dict[str, str]) -> str:
    """The fold statistics of `results.fold_rows`, one line per configuration."""
    keys = sorted({k for row in rows for k in row["stats"]})
    header = [Tag.CONFIG_ID, Tag.SCENARIO, Tag.FOLDS, *keys, "config"]
    lines = [header]
    for row in rows:
        done = f"{row['folds']}/{row.get('num_folds', row['folds'])}"
        if row["folds"] < row.get("num_folds", 0):
            done += " (incomplete: not ranked)"
        cells = [row["config_id"], row["scenario"], done]
        cells += [mean_std_text(row["stats"].get(key)) for key in keys]
        cells.append(params_of.get(row["config_id"], ""))
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)
    return f"mean ± sample std over folds, per configuration\n{text}\n"


def dimension_line(trial: TrialRun, set_name: str) -> str:
    """'CCC arousal 0.810 valence 0.470 dominance 0.800, mean 0.693' from a dimensional trial's metrics."""
    parts = [key.split("/") for key in trial.metrics if key.count("/") == 2]
    names = [d for s, d, stat in parts if s == set_name and stat == Key.CCC]
    values = " ".join(f"{d} {trial.metric(Key.dimension_metric(set_name, d, Key.CCC)):.3f}" for d in names)
    return f"CCC {values}, mean {trial.metric(Key.of_set(set_name, Key.CCC)):.3f}"


def paper_tables(best: dict[str, TrialRun | None], metric: str, tuned: list[str], client=None) -> str:
    """The best trial of each scenario as the paper prints it, one table per held-out set (from the
    trial's JSON classification reports when `client` can read them)."""
    from orchestrator.results import classification_report

    blocks = []
    for scenario, trial in best.items():
        if trial is None:
            continue
        knobs = " ".join(f"{k}={trial.params.get(k)}" for k in tuned if k in trial.params)
        fold = f" fold={trial.fold}" if trial.fold else ""
        blocks.append(f"== {scenario}: trial {trial.trial_id}{fold} {knobs} ({metric}={trial.metric(metric):.3f})")
        for set_name in trial.test_sets:
            report = classification_report(client, trial, set_name) if client is not None else None
            rows: list[PaperRow] = paper_table(trial, set_name, report)
            if rows:
                blocks.append(f"-- {set_name}\n{paper_table_text(rows)}\n")
            if trial.metric(Key.of_set(set_name, Key.CCC)) is not None:
                blocks.append(f"-- {set_name} {dimension_line(trial, set_name)}")
    return "\n".join(blocks) + "\n" if blocks else "(no finished trial with a report)\n"


def params_by_config(trials: list[TrialRun], tuned: list[str]) -> dict[str, str]:
    """config_id -> its tuned values, as 'key=value ...'."""
    return {t.config_id or "": " ".join(f"{k}={t.params.get(k)}" for k in tuned if k in t.params) for t in trials}
