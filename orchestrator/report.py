"""The sweep report: the paper's tables and plots for one sweep, read back from its MLflow runs.

    python -m orchestrator.report smoke                    # the latest smoke sweep in ./mlruns
    python -m orchestrator.report <parent-run-id> --out reports/transfer
    python -m orchestrator.report features text smoke      # several sweeps on the same data, side by side

Writes report.md (images beside it, under images/) and report.html (one self-contained file) and
logs them to the sweep's parent run as artifacts under report/. With several sweeps it writes the
comparison (each sweep's best configuration on every held-out set; refused when their data differ)
and logs nothing: it belongs to no one sweep.
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator import paths, results, tracking
from orchestrator.document import Details, Document, Figure, Heading, Row, Table, Text, to_html, to_markdown
from orchestrator.results import TIEBREAK_METRIC, StoreError, SweepResults, TrialRun
from workers.kinds import FINETUNE
from workers.vocabulary import ConfigKey, Key, Tag

ARTIFACT_DIR = "report"
# Config values that are not tuned knobs: where things are, and the speaker split (a fold's identity).
NOT_KNOBS = ConfigKey.NOT_KNOBS
NOT_KNOB_PREFIXES = ("eval_sets.", "tracking")
SCENARIO_ORDER = ["vanilla", "finer", "zero_shot", "zh_only", "mixed"]
TRANSFER_PARAM = "english_fraction"
MAX_KNOB_ROWS = 4  # knobs plotted, one row each
MAX_LEVELS = 6  # a knob with more values than this is drawn on a continuous axis (and not used for colour)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.report",
        description="Write a sweep's report (Markdown + HTML: the paper's tables, confusion matrices, "
        "transfer and fold plots, knob plots) and log it to the sweep's parent MLflow run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "sweeps_or_runs",
        nargs="+",
        metavar="SWEEP_OR_RUN",
        help="a sweep name (its latest parent run) or a run id (a parent, or a trial: its parent); several: "
        "compare their best configurations (sweeps on the same data only)",
    )
    parser.add_argument("--tracking-uri", default=None, help=paths.TRACKING_URI_HELP)
    parser.add_argument("--experiment", default=None, help="MLflow experiment; default: the sweep name")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="report directory; default: ./reports/<sweep>-<parent run id[:8]> (several: ./reports/compare-<sweeps>)",
    )
    parser.add_argument("--no-log", action="store_true", help="write the files only; do not log them to the parent run")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    tracking_uri = args.tracking_uri or paths.default_tracking_uri()
    try:
        client = results.connect(tracking_uri)
    except StoreError as error:  # no store there, or it does not answer
        print(f"report: {error}", file=sys.stderr)
        return 1
    try:
        parents = [results.find_parent(client, ref, args.experiment) for ref in args.sweeps_or_runs]
    except StoreError as error:  # a SWEEP_OR_RUN names nothing in the store: a usage error
        parser.error(str(error))
    try:
        sweeps = [results.load_sweep(client, parent) for parent in parents]
    except StoreError as error:
        print(f"report: {error}", file=sys.stderr)
        return 1
    if len(sweeps) > 1:
        return compare_main(sweeps, args.out)
    sweep = sweeps[0]
    if not sweep.trials:
        print(
            f"report: run {sweep.parent_id} (sweep {sweep.name}, {sweep.parent_status}) has no trial runs; "
            "nothing to report",
            file=sys.stderr,
        )
        return 1
    out_dir = (args.out or Path.cwd() / "reports" / f"{sweep.name}-{sweep.parent_id[:8]}").resolve()
    print(
        f"report: sweep {sweep.name}, parent run {sweep.parent_id}, {len(sweep.trials)} trial run(s) "
        f"({_status_summary(sweep)})",
        file=sys.stderr,
    )
    try:
        written = write_report(client, sweep, out_dir)
        if not args.no_log:
            log_report(client, sweep.parent_id, out_dir, written)
    except StoreError as error:
        print(f"report: {error}", file=sys.stderr)
        return 1
    print(f"wrote {out_dir / 'report.html'}")
    print(f"wrote {out_dir / 'report.md'} (images in {out_dir / 'images'})")
    if not args.no_log:
        print(f"logged to parent run {sweep.parent_id} as artifacts {ARTIFACT_DIR}/")
    return 0


def write_report(client, sweep: SweepResults, out_dir: Path) -> list[str]:
    """Write report.md, report.html and the images; returns what was written, relative to out_dir."""
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    document = build_report(client, sweep, out_dir)
    (out_dir / "report.md").write_text(to_markdown(document))
    (out_dir / "report.html").write_text(to_html(document, out_dir))
    return ["report.md", "report.html", *document.images()]


def log_report(client, parent_id: str, out_dir: Path, files: list[str]) -> None:
    """Log exactly the report's files (never the whole directory: --out may hold anything, even the store)."""
    try:
        tracking.log_files(client, parent_id, out_dir, files, ARTIFACT_DIR)
    except Exception as error:  # e.g. a read-only artifact store
        raise StoreError(
            f"wrote the report but could not log it to run {parent_id}: "
            f"{str(error).strip().splitlines()[0][:200]} (use --no-log to skip)"
        ) from None


def build_report(client, sweep: SweepResults, out_dir: Path) -> Document:
    document = Document(f"Sweep report: {sweep.name}")
    knobs = tuned_knobs(sweep.trials)
    chosen = sweep.best_per_scenario()
    document.add(*overview(sweep))
    document.add(*best_summary(sweep, chosen, knobs))
    document.add(*encoder_section(sweep))
    document.add(*transfer_section(sweep, out_dir))
    document.add(*fold_section(sweep, out_dir))
    document.add(*selected_details(client, sweep, chosen, knobs, out_dir))
    document.add(*knob_section(sweep, chosen, knobs, out_dir))
    document.add(*trials_section(sweep, knobs))
    return document


# ---------------------------------------------------------------- several sweeps


def compare_main(sweeps: list[SweepResults], out: Path | None) -> int:
    try:
        rows = results.compare_sweeps(sweeps)
    except results.DataMismatch as error:
        print(f"report: cannot compare: {error}", file=sys.stderr)
        return 1
    names = "-".join(_slug(s.name) for s in sweeps)
    out_dir = (out or Path.cwd() / "reports" / f"compare-{names}").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    document = comparison_report(rows)
    (out_dir / "report.md").write_text(to_markdown(document))
    (out_dir / "report.html").write_text(to_html(document, out_dir))
    table = comparison_table(rows)
    print(to_markdown(Document("", [table])).strip())
    print(f"wrote {out_dir / 'report.html'}")
    print(f"wrote {out_dir / 'report.md'}")
    return 0


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
    header += [f"{s}/{stat}" for s in sets for stat in results.COMPARED_STATS]
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
                _config_text(trial, knobs),
                f"{sweep.metric} {_num(trial.metric(sweep.metric), 3)}",
            ]
        cells += [_num(row.stat(s, stat), 3) for s in sets for stat in results.COMPARED_STATS]
        lines.append(cells)
    return Table(header, lines, caption="uar: unweighted average recall (macro recall); –: not measured")


# ---------------------------------------------------------------- overview


def overview(sweep: SweepResults) -> list:
    tags = sweep.parent_tags
    facts = [
        f"Parent run `{sweep.parent_id}` ({sweep.parent_name}) in experiment `{sweep.experiment_name}`, "
        f"store `{sweep.tracking_uri}`.",
        f"Started {_time(sweep.parent_start_time)}"
        + (f", ended {_time(sweep.parent_end_time)}" if sweep.parent_end_time else "")
        + f"; parent status **{sweep.parent_status}**; trials: {_status_summary(sweep)}.",
    ]
    if tags.get(Tag.DATA_HASH) or tags.get(Tag.GIT_COMMIT):
        facts.append(f"Data hash `{tags.get(Tag.DATA_HASH, '?')[:16]}`, code `{tags.get(Tag.GIT_COMMIT, '?')[:12]}`.")
    if tags.get(Tag.COMMAND):
        facts.append(f"Command: `{tags[Tag.COMMAND]}`.")
    facts.append(f"Report written {time.strftime('%Y-%m-%d %H:%M')}.")
    blocks: list = [Text(" ".join(facts))]
    unfinished = [t for t in sweep.trials if t.status != "FINISHED"]
    if sweep.parent_status == "RUNNING" or unfinished:
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


# ---------------------------------------------------------------- best configuration per scenario


def best_summary(sweep: SweepResults, chosen: dict[str, TrialRun | None], knobs: list[str]) -> list:
    test_sets = _sets(t for t in chosen.values() if t)
    header = [
        "scenario",
        "trials",
        "selected trial",
        "configuration",
        sweep.metric,
        *[f"{s}/accuracy" for s in test_sets],
        *[f"{s}/macro_f1" for s in test_sets],
    ]
    rows = []
    for scenario in sorted(chosen, key=_scenario_order):
        trial = chosen[scenario]
        members = [t for t in sweep.trials if t.scenario == scenario]
        counts = f"{sum(t.selectable(sweep.metric) for t in members)}/{len(members)}"
        if trial is None:
            rows.append([scenario, counts, "none finished", "", "–", *["–"] * (2 * len(test_sets))])
            continue
        rows.append(
            [
                scenario,
                counts,
                trial.trial_id,
                _config_text(trial, knobs),
                _num(trial.metric(sweep.metric), 3),
                *[_num(trial.metric(f"{s}/accuracy"), 3) for s in test_sets],
                *[_num(trial.metric(f"{s}/macro_f1"), 3) for s in test_sets],
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


def encoder_section(sweep: SweepResults) -> list:
    """EmoBox's encoder table (UA, WA, macro F1; mean ± std over folds) when the sweep varies `start`."""
    if not results.varies_start(sweep.trials):
        return []
    rows = results.encoder_rows(sweep.trials, sweep.metric, sweep.mode)
    test_sets = sorted({key.split("/")[0] for row in rows for key in row.stats})
    # The recipe each encoder was selected with: its learning rate and schedule, and whatever else its scenario tunes.
    recipe = ["learning_rate", "schedule"]
    scenario_knobs = {
        scenario: recipe
        + [k for k in tuned_knobs([t for t in sweep.trials if t.scenario == scenario]) if k not in {"start", *recipe}]
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
    for row in sorted(rows, key=lambda r: (_scenario_order(r.scenario), r.start)):
        selected = row.selected
        cells.append(
            [
                row.scenario,
                row.start,
                row.family or "?",
                selected.trial_id if selected else "none finished",
                _config_text(selected, scenario_knobs[row.scenario]) if selected else "",
                f"{row.folds}",
                *[
                    results.mean_std_text(row.stats.get(f"{s}/{stat}"))
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


def selected_details(
    client, sweep: SweepResults, chosen: dict[str, TrialRun | None], knobs: list[str], out_dir: Path
) -> list:
    blocks: list = [Heading(2, "Selected trials in detail")]
    for scenario in sorted(chosen, key=_scenario_order):
        if chosen[scenario] is not None:
            blocks += scenario_detail(client, scenario, chosen[scenario], knobs, out_dir, sweep.metric)
    return blocks if len(blocks) > 1 else []


def scenario_detail(client, scenario: str, trial: TrialRun, knobs: list[str], out_dir: Path, metric: str) -> list:
    blocks: list = [Heading(3, f"{scenario}: trial {trial.trial_id}")]
    start = trial.params.get("start") or trial.tags.get(Tag.START, "?")
    kind = trial.tags.get(Tag.TRIAL_KIND, FINETUNE)
    what = f"start `{start}`" if kind == FINETUNE else f"a `{kind}` baseline"
    facts = [f"Run `{trial.run_id}`; {what}; {_config_text(trial, knobs) or 'no tuned knobs'}."]
    if trial.tags.get(Tag.TRAIN_SPEAKERS):
        facts.append(f"Trained on speakers {trial.tags[Tag.TRAIN_SPEAKERS]}.")
    facts.append(
        f"`{metric}` {_num(trial.metric(metric), 3)}, `{TIEBREAK_METRIC}` {_num(trial.metric(TIEBREAK_METRIC), 3)}."
    )
    if trial.labels:
        facts.append(f"Labels: {', '.join(trial.labels)}.")
    blocks.append(Text(" ".join(facts)))
    for set_name in trial.test_sets:
        blocks.append(Heading(4, set_name + _set_origin(trial, set_name)))
        table = paper_table(trial, set_name, results.classification_report(client, trial, set_name))
        if table is None:
            blocks.append(Text(f"No per-class metrics for `{set_name}`."))
            continue
        ece = trial.metric(f"{set_name}/ece")
        table = Table(
            table.header,
            table.rows,
            caption=f"{scenario}, trial {trial.trial_id}, on {set_name}"
            + (f"; expected calibration error {ece:.3f}" if ece is not None else ""),
        )
        confusion = _fetch_image(client, trial, f"confusion_matrix_{set_name}.png", out_dir, scenario)
        reliability = _fetch_image(client, trial, f"reliability_{set_name}.png", out_dir, scenario)
        side = [table]
        if confusion:
            side.append(Figure([confusion], caption="rows: true emotion; shading: share of the row"))
        else:
            side.append(Text(f"(the run has no `confusion_matrix_{set_name}.png` artifact)"))
        blocks.append(Row(side))
        if reliability:
            blocks.append(
                Figure(
                    [reliability],
                    caption="calibration: accuracy per confidence bin, and what "
                    "abstaining below a threshold costs (share answered) and buys (accuracy)",
                )
            )
    if any(key.startswith(Key.LAYER_WEIGHT_PREFIX) for key in trial.metrics):
        layer_weights = _fetch_image(client, trial, Key.LAYER_WEIGHTS_FIGURE, out_dir, scenario)
        if layer_weights:
            blocks.append(Figure([layer_weights], caption="weighted_sum: learned softmax weight per hidden state"))
    return blocks


def _set_origin(trial: TrialRun, set_name: str) -> str:
    """' (held-out speakers 0015)', or for another corpus ' (another corpus: DIR; 12 clips left out: ...)'."""
    corpus = trial.corpus_of(set_name)
    if corpus is None:
        speakers = trial.speakers_of(set_name)
        return f" (held-out speakers {speakers})" if speakers else ""
    unmapped = trial.metric(f"{set_name}/{Key.UNMAPPED_CLIPS}")
    left_out = f"; {int(unmapped)} clips left out, their labels map to none of the training labels" if unmapped else ""
    return f" (another corpus: {corpus}{left_out})"


def paper_table(trial: TrialRun, set_name: str, report: dict | None = None) -> Table | None:
    """The paper's Tables 1-5 (`results.paper_table`, from the trial's JSON report when it has one) as a table."""
    rows = results.paper_table(trial, set_name, report)
    if not rows:
        return None
    cells = [
        [
            row.label[:1].upper() + row.label[1:],
            _blank(row.precision),
            _blank(row.recall),
            _num(row.f1),
            f"{row.support}",
        ]
        for row in rows
    ]
    return Table(["", "Precision", "Recall", "F1-score", "Support"], cells)


def _blank(value: float | None) -> str:
    return "" if value is None else _num(value)


def _fetch_image(client, trial: TrialRun, artifact: str, out_dir: Path, scenario: str) -> str | None:
    """Copy a trial's image artifact into images/; None when the run has none."""
    target = out_dir / "images" / f"{_slug(scenario)}_{trial.trial_id}_{artifact}"
    with tempfile.TemporaryDirectory() as tmp:
        logged = tracking.download_if_logged(client, trial.run_id, artifact, tmp)  # None: an older or crashed trial
        if logged is None:
            return None
        target.write_bytes(logged.read_bytes())
    return str(target.relative_to(out_dir))


# ---------------------------------------------------------------- transfer: English fraction


def transfer_section(sweep: SweepResults, out_dir: Path) -> list:
    """Mandarin and English held-out accuracy against the share of English in training."""
    finished = [t for t in sweep.trials if t.selectable(sweep.metric) and t.metric("test_zh/accuracy") is not None]
    curve = [t for t in finished if _as_float(t.params.get(TRANSFER_PARAM)) is not None]
    if not curve:
        return []
    references = [t for t in finished if _as_float(t.params.get(TRANSFER_PARAM)) is None]
    by_fraction: dict[float, list[TrialRun]] = {}
    for trial in curve:
        by_fraction.setdefault(_as_float(trial.params[TRANSFER_PARAM]), []).append(trial)
    selected = {f: sweep.best(ts) for f, ts in sorted(by_fraction.items())}
    reference_best = {
        s: sweep.best([t for t in references if t.scenario == s])
        for s in sorted({t.scenario for t in references}, key=_scenario_order)
    }
    image = "images/transfer_english_fraction.png"
    _transfer_plot(by_fraction, selected, reference_best, out_dir / image)
    rows = [
        [
            f"{fraction:g}",
            str(len(by_fraction[fraction])),
            trial.trial_id,
            _num(trial.metric(sweep.metric), 3),
            _num(trial.metric("test_zh/accuracy"), 3),
            _num(trial.metric("test_en/accuracy"), 3),
        ]
        for fraction, trial in selected.items()
    ]
    rows += [
        [
            f"{scenario} (reference)",
            str(sum(t.scenario == scenario for t in references)),
            trial.trial_id,
            _num(trial.metric(sweep.metric), 3),
            _num(trial.metric("test_zh/accuracy"), 3),
            _num(trial.metric("test_en/accuracy"), 3),
        ]
        for scenario, trial in reference_best.items()
    ]
    return [
        Heading(2, "Transfer to Mandarin: English fraction"),
        Text(
            f"Held-out Mandarin (`test_zh`) and English (`test_en`) accuracy against `{TRANSFER_PARAM}`, "
            "the share of English clips in each training epoch. Rising Mandarin accuracy is transfer; falling "
            "English accuracy is forgetting. Lines join the selected trial at each fraction (best "
            f"`{sweep.metric}`); small dots are the other trials. Runs without an English fraction "
            "(e.g. zero-shot, Mandarin-only) are drawn as dashed reference lines."
        ),
        Figure([image]),
        Table([TRANSFER_PARAM, "trials", "selected trial", sweep.metric, "test_zh/accuracy", "test_en/accuracy"], rows),
    ]


def _transfer_plot(
    by_fraction: dict[float, list[TrialRun]],
    selected: dict[float, TrialRun],
    references: dict[str, TrialRun],
    path: Path,
) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4.6), dpi=100)
    series = [
        ("test_zh/accuracy", "Mandarin (test_zh)", "tab:red", "o"),
        ("test_en/accuracy", "English (test_en)", "tab:blue", "s"),
    ]
    for key, label, colour, marker in series:
        dots = [(f, t.metric(key)) for f, ts in by_fraction.items() for t in ts if t.metric(key) is not None]
        if dots:
            ax.scatter(*zip(*dots), s=14, color=colour, alpha=0.3, zorder=2)
        line = [(f, t.metric(key)) for f, t in selected.items() if t.metric(key) is not None]
        if line:
            ax.plot(*zip(*line), marker=marker, color=colour, label=label, zorder=3)
    styles = ["--", ":", "-."]
    labels = []
    for i, (scenario, trial) in enumerate(references.items()):
        for key, _label, colour, _ in series:
            value = trial.metric(key)
            if value is None:
                continue
            ax.axhline(value, color=colour, linestyle=styles[i % len(styles)], linewidth=1, alpha=0.8)
            labels.append([value, f"{scenario} ({key.split('/')[0]}): {value:.2f}", colour])
    labels.sort()
    for below, above in zip(labels, labels[1:]):  # keep the labels at the right edge from overlapping
        above[0] = max(above[0], below[0] + 0.045)
    for y, text, colour in labels:
        ax.annotate(
            text,
            (1.0, y),
            xycoords=("axes fraction", "data"),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
            color=colour,
        )
    ax.set_xlabel(f"{TRANSFER_PARAM} (share of English clips in training)")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1.02)
    fractions = sorted(by_fraction)
    margin = max(0.05, (fractions[-1] - fractions[0]) * 0.05)
    ax.set_xlim(fractions[0] - margin, fractions[-1] + margin)
    ax.axhline(0.2, color="gray", linewidth=0.8, linestyle=(0, (1, 3)))
    ax.annotate(
        "chance (5 emotions)",
        (0.01, 0.2),
        xycoords=("axes fraction", "data"),
        xytext=(0, 3),
        textcoords="offset points",
        fontsize=7,
        color="gray",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Transfer (Mandarin) against forgetting (English)")
    fig.tight_layout()
    _save(fig, path)


# ---------------------------------------------------------------- folds


def fold_section(sweep: SweepResults, out_dir: Path) -> list:
    folded = [t for t in sweep.trials if t.fold is not None and t.config_id is not None]
    if not folded:
        return []
    configs: dict[str, list[TrialRun]] = {}
    for trial in folded:
        configs.setdefault(trial.config_id, []).append(trial)
    config_knobs = [k for k in tuned_knobs(folded) if _constant_within(configs, k)]
    selectable = [t for t in folded if t.selectable(sweep.metric)]
    sets = ["val", *_sets(selectable)]
    header = ["configuration", *config_knobs, "folds", *[f"{s}/accuracy" for s in sets]]
    stats = {row["config_id"]: row for row in results.fold_rows(folded)}
    rows = []
    for config_id, trials in sorted(configs.items(), key=lambda item: _natural(item[0])):
        row = stats.get(config_id, {"folds": 0, "stats": {}})
        rows.append(
            [
                config_id,
                *[trials[0].params.get(k, "") for k in config_knobs],
                f"{row['folds']}/{len(trials)}",
                *[results.mean_std_text(row["stats"].get(f"{s}/accuracy")) for s in sets],
            ]
        )
    image = "images/folds.png"
    _fold_plot(configs, sets, sweep.metric, out_dir / image)
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


def _fold_plot(configs: dict[str, list[TrialRun]], sets: list[str], metric: str, path: Path) -> None:
    plt = _pyplot()
    names = sorted(configs, key=_natural)
    folds = sorted({t.fold for ts in configs.values() for t in ts}, key=_natural)
    colours = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(sets), figsize=(max(4.2 * len(sets), 6), 4.2), dpi=100, squeeze=False)
    for ax, set_name in zip(axes[0], sets):
        labelled: set[str] = set()
        for x, config_id in enumerate(names):
            values = []
            for trial in configs[config_id]:
                value = trial.metric(f"{set_name}/accuracy") if trial.selectable(metric) else None
                if value is None:
                    continue
                values.append(value)
                k = folds.index(trial.fold)
                offset = (k - (len(folds) - 1) / 2) * min(0.12, 0.6 / len(folds))  # side by side, in fold order
                ax.scatter(
                    x + offset,
                    value,
                    color=colours(k % 10),
                    s=22,
                    zorder=3,
                    label=None if trial.fold in labelled else f"fold {trial.fold}",
                )
                labelled.add(trial.fold)
            if values:
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                ax.errorbar(
                    x, statistics.fmean(values), yerr=spread, fmt="_", color="black", markersize=18, capsize=4, zorder=4
                )
        ax.set_xticks(range(len(names)), names, rotation=20 if len(names) > 4 else 0)
        ax.set_xlim(-0.5, len(names) - 0.5)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{set_name}/accuracy")
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if unique:
        axes[0][-1].legend(unique.values(), unique.keys(), fontsize=7, loc="lower right")
    fig.tight_layout()
    _save(fig, path)


# ---------------------------------------------------------------- knobs


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
    sets = ["val", *_sets(finished)]
    image = "images/knobs.png"
    _knob_plot(finished, plotted, sets, {t.run_id for t in chosen.values() if t}, out_dir / image)
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


@dataclass(frozen=True)
class KnobAxis:
    """One row of the knob plot: the knob on the x axis, and the other knobs that colour the points."""

    knob: str
    levels: list[str]  # the knob's values, in order
    continuous: bool  # numeric with many values: a continuous axis instead of one tick per level
    others: list[str]
    groups: list[str]  # one colour each: a combination of the other knobs' values

    @classmethod
    def of(cls, trials: list[TrialRun], knob: str, knobs: list[str]) -> KnobAxis:
        levels = sorted({t.params.get(knob, "") for t in trials}, key=_level_order)
        others = [k for k in knobs if k != knob and len({t.params.get(k) for t in trials}) <= MAX_LEVELS]
        if len({_group(t, others) for t in trials}) > 10:
            others = others[:1]
        ordered = sorted(trials, key=lambda t: [_level_order(t.params.get(k, "")) for k in others])
        groups = list(dict.fromkeys(_group(t, others) for t in ordered))
        continuous = _numeric_knob(trials, knob) and len(levels) > MAX_LEVELS
        return cls(knob, levels, continuous, others, groups)

    def x(self, trial: TrialRun) -> float | None:
        raw = trial.params.get(self.knob, "")
        return _as_float(raw) if self.continuous else self.levels.index(raw)

    def label(self, group: str) -> str:
        return group.split("=", 1)[1] if len(self.others) == 1 else group or "all trials"


def _knob_plot(trials: list[TrialRun], knobs: list[str], sets: list[str], selected: set[str], path: Path) -> None:
    """One row per knob, one column per set's accuracy; stars mark the `selected` runs."""
    plt = _pyplot()
    fig, axes = plt.subplots(
        len(knobs), len(sets), figsize=(3.5 * len(sets) + 2.6, 3.3 * len(knobs)), dpi=100, squeeze=False
    )
    for row, knob in enumerate(knobs):
        axis = KnobAxis.of(trials, knob, knobs)
        for col, set_name in enumerate(sets):
            _knob_panel(axes[row][col], trials, axis, set_name, selected, first_column=col == 0)
        _knob_legend(axes[row], axis.others)
    fig.tight_layout()
    _save(fig, path)


def _knob_panel(ax, trials: list[TrialRun], axis: KnobAxis, set_name: str, selected: set[str], first_column: bool):
    colours = _pyplot().get_cmap("tab10")
    for g, group in enumerate(axis.groups):
        points = _knob_points([t for t in trials if _group(t, axis.others) == group], axis, set_name, selected)
        if points:
            _draw_group(ax, points, axis, colours(g % 10), axis.label(group) if first_column else None)
    _knob_x_axis(ax, trials, axis)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_xlabel(axis.knob)
    if first_column:
        ax.set_ylabel("accuracy")
    ax.set_title(f"{set_name}/accuracy", fontsize=10)


def _knob_points(trials: list[TrialRun], axis: KnobAxis, set_name: str, selected: set[str]) -> list[tuple]:
    """(x, accuracy, selected) per trial that has both, sorted by x."""
    points = []
    for trial in trials:
        value, x = trial.metric(f"{set_name}/accuracy"), axis.x(trial)
        if value is not None and x is not None:
            points.append((x, value, trial.run_id in selected))
    return sorted(points)


def _draw_group(ax, points: list[tuple], axis: KnobAxis, colour, label: str | None) -> None:
    trend = _trend(points, axis.levels, axis.continuous)
    if len(trend) > 1:
        ax.plot(*zip(*trend), color=colour, alpha=0.6, linewidth=1)
    xs, ys, _ = zip(*points)
    ax.scatter(xs, ys, color=colour, s=26, zorder=3, label=label)
    stars = [(x, y) for x, y, chosen in points if chosen]
    if stars:
        ax.scatter(*zip(*stars), marker="*", s=200, facecolor=colour, edgecolor="black", zorder=4)


def _knob_x_axis(ax, trials: list[TrialRun], axis: KnobAxis) -> None:
    """Log scale for a continuous knob spanning a decade or more; one tick per level otherwise."""
    if axis.continuous:
        values = [v for v in (_as_float(t.params.get(axis.knob)) for t in trials) if v is not None]
        if min(values) > 0 and max(values) / min(values) >= 10:
            ax.set_xscale("log")
        return
    levels = axis.levels
    ax.set_xticks(range(len(levels)), [_short_level(v) for v in levels], rotation=20 if len(levels) > 3 else 0)
    ax.set_xlim(-0.5, len(levels) - 0.5)


def _knob_legend(row_axes, others: list[str]) -> None:
    handles, labels = row_axes[0].get_legend_handles_labels()
    if labels:
        row_axes[-1].legend(
            handles,
            labels,
            loc="upper left",
            bbox_to_anchor=(1.03, 1.0),
            fontsize=8,
            title=", ".join(others) or None,
            title_fontsize=8,
            frameon=False,
        )


def _trend(points: list[tuple], levels: list[str], continuous: bool) -> list[tuple[float, float]]:
    """Mean per x over the numeric values of a knob: the line a reader follows (non-numeric levels such
    as 'None' stay single points)."""
    by_x: dict[float, list[float]] = {}
    for x, y, _ in points:
        if continuous or _as_float(levels[int(x)]) is not None:
            by_x.setdefault(x, []).append(y)
    return [(x, statistics.fmean(ys)) for x, ys in sorted(by_x.items())]


def _numeric_knob(trials: list[TrialRun], key: str) -> bool:
    raw = {t.params.get(key) for t in trials}
    numbers = {_as_float(v) for v in raw} - {None}
    return len(numbers) > 1 and all(_as_float(v) is not None or v in ("None", "", None) for v in raw)


def _level_order(raw: str) -> tuple:
    number = _as_float(raw)
    return (0, number, "") if number is not None else (1, 0.0, str(raw))


def _short_level(raw: str) -> str:
    return raw if len(raw) <= 14 else raw[:13] + "…"


def _group(trial: TrialRun, knobs: list[str]) -> str:
    return ", ".join(f"{k}={trial.params.get(k, '?')}" for k in knobs)


# ---------------------------------------------------------------- all trials


def trials_section(sweep: SweepResults, knobs: list[str]) -> list:
    ordered = sweep.ranked()
    sets = _sets(ordered)
    scenario_column = len(sweep.scenarios) > 1
    error_column = any(t.error for t in ordered)
    attempt_column = any(t.attempt > 1 for t in ordered)
    header = [
        "rank",
        "trial",
        "status",
        *(["attempt"] if attempt_column else []),
        *(["scenario"] if scenario_column else []),
        *knobs,
        sweep.metric,
        *[f"{s}/accuracy" for s in sets],
        "minutes",
        *(["error"] if error_column else []),
    ]
    rows = []
    rank = 0
    for trial in ordered:
        rank += trial.selectable(sweep.metric)
        minutes = (trial.end_time - trial.start_time) / 60_000 if trial.end_time and trial.start_time else None
        rows.append(
            [
                str(rank) if trial.selectable(sweep.metric) else "–",
                trial.trial_id,
                trial.status,
                *([str(trial.attempt)] if attempt_column else []),
                *([trial.scenario] if scenario_column else []),
                *[trial.params.get(k, "") for k in knobs],
                _num(trial.metric(sweep.metric), 3),
                *[_num(trial.metric(f"{s}/accuracy"), 3) for s in sets],
                _num(minutes, 1),
                *([_clip(trial.error_line, 60)] if error_column else []),
            ]
        )
    blocks: list = [
        Heading(2, "All trials"),
        Text(
            f"Best first by `{sweep.metric}`; unfinished trials last (a running trial shows its latest "
            "values)."
            + (" Failed trials' errors are below the table." if error_column else "")
            + (
                f" A retried trial's values are its last attempt's (column attempt); in MLflow, "
                f"`{Key.ATTEMPT}` beside each step says which attempt logged it."
                if attempt_column
                else ""
            )
        ),
        Table(header, rows),
    ]
    for trial in ordered:
        if trial.error:
            blocks.append(
                Details(
                    f"{trial.trial_id} ({trial.status}): {_clip(trial.error_line, 120)}",
                    "\n".join(trial.error.strip().splitlines()[-25:]),
                )
            )
    return blocks


# ---------------------------------------------------------------- small helpers


def _sets(trials) -> list[str]:
    """Held-out test sets present in any of the trials, by name."""
    return sorted({s for t in trials for s in t.test_sets})


def _config_text(trial: TrialRun, knobs: list[str]) -> str:
    return ", ".join(f"{k}={trial.params.get(k, '?')}" for k in knobs)


def _constant_within(configs: dict[str, list[TrialRun]], key: str) -> bool:
    return all(len({t.params.get(key) for t in ts if t.params}) <= 1 for ts in configs.values())


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _as_float(raw: str | None) -> float | None:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _natural(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(text))]


def _scenario_order(scenario: str) -> tuple:
    return (SCENARIO_ORDER.index(scenario) if scenario in SCENARIO_ORDER else len(SCENARIO_ORDER), scenario)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _time(millis: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(millis / 1000)) if millis else "?"


def _status_summary(sweep: SweepResults) -> str:
    return ", ".join(f"{n} {status.lower()}" for status, n in sweep.count_by_status().items())


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
