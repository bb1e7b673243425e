"""What a finished sweep says, read back from MLflow (the record, whatever Tune restored).

- Folds: mean and standard deviation per configuration (`config_id`) on the parent run, as
  metrics `folds/<config_id>/<set>/accuracy_mean|_std` (also macro_f1) and a `folds.txt` table.
- The best configuration per scenario in the paper's table form (per-class precision, recall,
  F1, support; accuracy; macro and weighted averages): the child runs'
  `classification_report_<set>.txt` artifacts hold exactly that.
"""

from __future__ import annotations

import math
from collections import defaultdict

FOLD_STATS = ("accuracy", "macro_f1")


def fold_rows(runs: list) -> list[dict]:
    """One row per configuration that ran on folds: n folds, mean and std of each held-out set's stats."""
    groups: dict[str, list] = defaultdict(list)
    for run in runs:
        if run.data.tags.get("fold") and run.info.status == "FINISHED":
            groups[run.data.tags.get("config_id", "")].append(run)
    rows = []
    for config_id, members in sorted(groups.items()):
        row = {
            "config_id": config_id,
            "scenario": members[0].data.tags.get("scenario", ""),
            "folds": len(members),
            "stats": {},
        }
        sets = sorted({k.split("/")[0] for r in members for k in r.data.metrics if k.endswith("/accuracy")})
        for set_name in sets:
            for stat in FOLD_STATS:
                values = [
                    r.data.metrics[f"{set_name}/{stat}"] for r in members if f"{set_name}/{stat}" in r.data.metrics
                ]
                if values:
                    row["stats"][f"{set_name}/{stat}"] = (_mean(values), _std(values), len(values))
        rows.append(row)
    return rows


def log_folds(client, parent_run_id: str, rows: list[dict], params_of: dict[str, str]) -> str:
    """Fold statistics as parent-run metrics and a text table; returns the table."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = []
    for row in rows:
        for key, (mean, std, _) in row["stats"].items():
            metrics.append(Metric(f"folds/{row['config_id']}/{key}_mean", mean, now, 0))
            metrics.append(Metric(f"folds/{row['config_id']}/{key}_std", std, now, 0))
    for start in range(0, len(metrics), 500):
        client.log_batch(parent_run_id, metrics=metrics[start : start + 500])
    table = fold_table(rows, params_of)
    client.log_text(parent_run_id, table, "folds.txt")
    return table


def fold_table(rows: list[dict], params_of: dict[str, str]) -> str:
    keys = sorted({k for row in rows for k in row["stats"]})
    header = ["config_id", "scenario", "folds", *keys, "config"]
    lines = [header]
    for row in rows:
        cells = [row["config_id"], row["scenario"], str(row["folds"])]
        for key in keys:
            mean, std, _ = row["stats"].get(key, (math.nan, math.nan, 0))
            cells.append(f"{mean:.3f} ± {std:.3f}")
        cells.append(params_of.get(row["config_id"], ""))
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)
    return f"mean ± sample std over folds, per configuration\n{text}\n"


def best_per_scenario(runs: list, metric: str, mode: str) -> dict[str, object]:
    """scenario -> its best finished run by `metric` (with folds: the best configuration's folds by mean)."""
    by_scenario: dict[str, list] = defaultdict(list)
    for run in runs:
        if run.info.status == "FINISHED" and metric in run.data.metrics:
            by_scenario[run.data.tags.get("scenario", "")].append(run)
    sign = 1 if mode == "max" else -1
    best = {}
    for scenario, members in sorted(by_scenario.items()):
        by_config: dict[str, list] = defaultdict(list)
        for run in members:
            by_config[run.data.tags.get("config_id", run.info.run_id)].append(run)
        config = max(by_config.values(), key=lambda rs: sign * _mean([r.data.metrics[metric] for r in rs]))
        best[scenario] = max(config, key=lambda r: sign * r.data.metrics[metric])
    return best


def paper_tables(client, best: dict[str, object], metric: str, tuned: list[str]) -> str:
    """The best run of each scenario as the paper prints it, one table per held-out set."""
    blocks = []
    for scenario, run in best.items():
        knobs = " ".join(f"{k}={run.data.params.get(k)}" for k in tuned if k in run.data.params)
        fold = f" fold={run.data.tags['fold']}" if run.data.tags.get("fold") else ""
        blocks.append(
            f"== {scenario}: trial {run.data.tags.get('trial_id')}{fold} {knobs} "
            f"({metric}={run.data.metrics[metric]:.3f})"
        )
        for artifact in sorted(a.path for a in client.list_artifacts(run.info.run_id)):
            if artifact.startswith("classification_report_test") and artifact.endswith(".txt"):
                set_name = artifact.removeprefix("classification_report_").removesuffix(".txt")
                text = _load_text(client, run.info.run_id, artifact)
                blocks.append(f"-- {set_name}\n{text.rstrip()}\n")
    return "\n".join(blocks) + "\n" if blocks else "(no finished trial with a report)\n"


def _load_text(client, run_id: str, path: str) -> str:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(run_id, path, tmp)
        return Path(local).read_text()


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _std(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = _mean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
