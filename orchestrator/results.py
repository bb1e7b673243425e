"""A sweep's results read back from MLflow: its trial runs as a table, and what is derived from them.

The one results layer of the driver's end-of-sweep summary, the report and `predict --run <parent>`:
- `load_sweep`: the parent run and its trial runs (`TrialRun`, one flattened child run each);
- `best` and `best_per_scenario`: the one rule that picks a sweep's best trial;
- `fold_rows`: mean and sample std over folds per configuration;
- `paper_table`: a trial's per-emotion table on one held-out set, as the paper prints it;
- `compare_sweeps`: the best trial of each of several sweeps on the same data (baselines beside
  fine-tuned encoders), refused for sweeps whose data differ.
- `encoder_rows`: EmoBox's encoder table (UA, WA, macro F1; mean and std over folds) per encoder.

No Ray and no torch here, and MLflow only through `orchestrator.tracking`: reading results stays cheap.
"""

from __future__ import annotations

import ast
import math
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass

from orchestrator.tracking import StoreError, connect, get_run, iter_runs, store_call
from workers.kinds import FINETUNE
from workers.vocabulary import Key, RunStatus, SweepTag, Tag

__all__ = ["StoreError", "connect", "get_run"]

DEFAULT_METRIC = Key.VAL_ACCURACY  # selection is on validation clips of the training speakers, never on tests
DEFAULT_MODE = "max"
TIEBREAK_METRIC = Key.VAL_LOSS  # lower is better; small validation sets tie often on accuracy
FOLD_STATS = (Key.ACCURACY, Key.MACRO_F1)
RUN_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class TrialRun:
    """One trial's child run, flattened to plain values."""

    run_id: str
    name: str
    status: str  # RUNNING, FINISHED, FAILED, KILLED, SCHEDULED
    scenario: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    start_time: int | None  # ms since the epoch
    end_time: int | None

    @classmethod
    def from_run(cls, run, default_scenario: str = "") -> TrialRun:
        """From an MLflow run (or anything shaped like one: `.info`, `.data`)."""
        tags = dict(run.data.tags)
        return cls(
            run_id=run.info.run_id,
            name=getattr(run.info, "run_name", None) or "",
            status=run.info.status,
            scenario=tags.get(Tag.SCENARIO) or default_scenario,
            tags=tags,
            params=dict(run.data.params),
            metrics=dict(run.data.metrics),
            start_time=getattr(run.info, "start_time", None),
            end_time=getattr(run.info, "end_time", None),
        )

    @property
    def trial_id(self) -> str:
        return self.tags.get(Tag.TRIAL_ID) or self.name or self.run_id[:8]

    @property
    def fold(self) -> str | None:
        return self.tags.get(Tag.FOLD)

    @property
    def config_id(self) -> str | None:
        return self.tags.get(Tag.CONFIG_ID)

    @property
    def num_folds(self) -> int:
        """Folds its configuration runs on, as the driver tagged it (0: untagged or no folds)."""
        raw = self.tags.get(Tag.NUM_FOLDS, "")
        return int(raw) if raw.isdigit() else 0

    @property
    def error(self) -> str | None:
        return self.tags.get(Tag.ERROR)

    @property
    def error_line(self) -> str:
        """The last line of the error (a traceback's last line is the exception and its message)."""
        lines = [line.strip() for line in (self.error or "").splitlines() if line.strip()]
        return lines[-1] if lines else ""

    @property
    def attempt(self) -> int:
        """The attempt that logged the run's latest values (1 unless Tune retried the trial)."""
        raw = self.tags.get(Tag.ATTEMPT, "")
        return int(raw) if raw.isdigit() else 1

    @property
    def stopped_early(self) -> bool:
        return self.tags.get(Tag.STOPPED_EARLY) == "true"

    @property
    def finished(self) -> bool:
        """Ran to its end: FINISHED and not stopped by the scheduler before its final evaluation."""
        return self.status == RunStatus.FINISHED and not self.stopped_early

    def metric(self, key: str) -> float | None:
        """The run's final value of `key`; for a trial without one (running, stopped early) the latest
        point of its learning curve (`val/accuracy` -> `curve/val_accuracy`)."""
        value = self.metrics.get(key)
        if value is None:
            value = self.metrics.get(Key.curve(key))
        return None if value is None or math.isnan(value) else value

    def attempt_at(self, timestamp_ms: int) -> int:
        """Which attempt logged a metric entry of this run: the last that started at or before it (a retry
        logs the steps between its checkpoint and the crash again; the timestamps tell the entries apart)."""
        attempt = 1
        for number in range(1, self.attempt + 1):
            started = self.tags.get(Tag.attempt_started(number))
            if started is not None and float(started) * 1000 <= timestamp_ms:
                attempt = number
        return attempt

    @property
    def eval_sets(self) -> list[str]:
        """Sets with final metrics, `val` first, then the held-out sets by name."""
        finals = (Key.ACCURACY, Key.CCC)  # a categorical set has accuracy, a dimensional one its mean CCC
        sets = {key.split("/")[0] for key in self.metrics if key.count("/") == 1 and key.split("/")[1] in finals}
        return sorted(sets, key=lambda s: (s != "val", s))

    @property
    def test_sets(self) -> list[str]:
        return [s for s in self.eval_sets if s != "val"]

    def corpus_of(self, set_name: str) -> str | None:
        """The shard directory of a held-out set from another corpus (--eval-data); None for the plan's sets."""
        return self.params.get(f"extra_eval_data.{set_name}")

    @property
    def labels(self) -> tuple[str, ...]:
        """The training corpus's label set, in class order (empty for runs logged before label sets)."""
        return tuple(label for label in self.tags.get(Tag.LABELS, "").split(",") if label)

    def speakers_of(self, set_name: str) -> str:
        """Speakers of an evaluation set from the flattened config (`eval_sets.test_en` = "('0015',)")."""
        raw = self.params.get(f"eval_sets.{set_name}")
        if raw is None and self.corpus_of(set_name) is not None:
            return ""  # another corpus: every clip whose label maps, whoever speaks
        if raw is None:
            return self.tags.get(Tag.TEST_SPEAKERS, "") if set_name != "val" else ""
        try:
            return ",".join(str(s) for s in ast.literal_eval(raw))
        except (ValueError, SyntaxError):
            return raw

    def selectable(self, metric: str = DEFAULT_METRIC) -> bool:
        """May be chosen best: finished, not stopped early, and scored on `metric`."""
        return self.finished and self.metric(metric) is not None


@dataclass(frozen=True)
class SweepResults:
    """A sweep's parent run and its trial runs."""

    tracking_uri: str
    experiment_id: str
    experiment_name: str
    parent_id: str
    parent_name: str
    parent_status: str
    parent_tags: dict[str, str]
    parent_start_time: int | None
    parent_end_time: int | None
    trials: list[TrialRun]

    @property
    def name(self) -> str:
        return self.parent_tags.get(Tag.SWEEP) or self.experiment_name

    @property
    def metric(self) -> str:
        """What ranks the trials, as the sweep declared it (parent runs without the tag: validation accuracy)."""
        return self.parent_tags.get(SweepTag.METRIC) or DEFAULT_METRIC

    @property
    def mode(self) -> str:
        return self.parent_tags.get(SweepTag.MODE) or DEFAULT_MODE

    @property
    def scenarios(self) -> list[str]:
        return sorted({t.scenario for t in self.trials})

    @property
    def kind(self) -> str:
        """What its trials ran (workers.kinds); sweeps from before the tag fine-tuned."""
        return self.parent_tags.get(Tag.TRIAL_KIND) or FINETUNE

    @property
    def data_hash(self) -> str:
        return self.parent_tags.get(Tag.DATA_HASH, "")

    def count_by_status(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for trial in self.trials:
            counts[trial.status] = counts.get(trial.status, 0) + 1
        return dict(sorted(counts.items()))

    def best(self, trials: list[TrialRun] | None = None) -> TrialRun | None:
        """The best of `trials` (default: all of the sweep's) by the sweep's own metric and mode."""
        return best(self.trials if trials is None else trials, self.metric, self.mode)

    def best_per_scenario(self) -> dict[str, TrialRun | None]:
        return best_per_scenario(self.trials, self.metric, self.mode)

    def ranked(self) -> list[TrialRun]:
        return ranked(self.trials, self.metric, self.mode)


# ---------------------------------------------------------------- the best trial: one rule


def best(trials, metric: str = DEFAULT_METRIC, mode: str = DEFAULT_MODE):
    """The best trial: among configurations whose every fold finished scored on `metric` (a trial without
    a fold is a configuration of its own; a run stopped early never counts), the best by its mean over
    folds, then that configuration's best fold. Ties: lower `val/loss`, then trial id. None when none qualifies.

    A configuration with folds missing (stopped early, failed, not yet run) is never best: the mean of its
    finished folds is not comparable with a mean over all of them (ASHA keeps exactly the lucky folds).

    `trials`: TrialRuns or MLflow runs; the one chosen is returned as it was given."""
    items = list(trials)
    views = trial_runs(items)
    given = {id(view): item for view, item in zip(views, items)}
    complete = [c for c in configurations(views, metric) if c.complete]
    if not complete:
        return None
    chosen = min(complete, key=lambda c: _config_key(c.scored, metric, mode))
    return given[id(min(chosen.scored, key=lambda trial: _trial_key(trial, metric, mode)))]


def best_per_scenario(trials, metric: str = DEFAULT_METRIC, mode: str = DEFAULT_MODE) -> dict:
    """scenario -> its best trial by `best` (None: no trial of the scenario qualifies)."""
    items = list(trials)
    scenarios = [view.scenario for view in trial_runs(items)]
    return {
        s: best([item for item, scenario in zip(items, scenarios) if scenario == s], metric, mode)
        for s in sorted(set(scenarios))
    }


def ranked(trials, metric: str = DEFAULT_METRIC, mode: str = DEFAULT_MODE) -> list[TrialRun]:
    """Best first by the rule of `best`: complete configurations by their mean (each one's folds together,
    best fold first); then scored trials of incomplete configurations, each by its own score; then the
    rest by trial id."""
    views = trial_runs(trials)
    groups = configurations(views, metric)
    complete = sorted((c for c in groups if c.complete), key=lambda c: _config_key(c.scored, metric, mode))
    by_trial = lambda t: _trial_key(t, metric, mode)  # noqa: E731
    ordered = [t for c in complete for t in sorted(c.scored, key=by_trial)]
    ordered += sorted((t for c in groups if not c.complete for t in c.scored), key=by_trial)
    placed = {id(t) for t in ordered}
    return ordered + sorted((t for t in views if id(t) not in placed), key=lambda t: t.trial_id)


@dataclass(frozen=True)
class Configuration:
    """One configuration's runs: all its folds (any status), or one trial without folds."""

    key: str  # config_id for folds, else the run id
    runs: tuple[TrialRun, ...]
    scored: tuple[TrialRun, ...]  # the selectable ones (finished, scored on the metric)
    num_folds: int  # folds it runs on (1 without folds)

    @property
    def folds_done(self) -> int:
        return len({t.fold for t in self.scored}) if self.runs[0].fold else len(self.scored)

    @property
    def complete(self) -> bool:
        return self.folds_done >= self.num_folds and bool(self.scored)

    @property
    def progress(self) -> str:
        """'2/3': folds scored of folds run on."""
        return f"{self.folds_done}/{self.num_folds}"


def config_key(trial: TrialRun) -> str:
    return trial.config_id if trial.fold and trial.config_id else trial.run_id


def configurations(trials, metric: str = DEFAULT_METRIC) -> list[Configuration]:
    """`trials` grouped by configuration. How many folds a configuration runs on: its runs' `num_folds`
    tag, and never fewer than the folds any run of its scenario ran on (runs logged before the tag)."""
    views = trial_runs(trials)
    groups: dict[str, list[TrialRun]] = defaultdict(list)
    folds_seen: dict[str, set[str]] = defaultdict(set)
    for trial in views:
        groups[config_key(trial)].append(trial)
        if trial.fold:
            folds_seen[trial.scenario].add(trial.fold)
    found = []
    for key, runs in groups.items():
        folded = bool(runs[0].fold)
        expected = max([t.num_folds for t in runs] + [len(folds_seen[runs[0].scenario])]) if folded else 1
        scored = tuple(t for t in runs if t.selectable(metric))
        found.append(Configuration(key, tuple(runs), scored, expected))
    return found


def _trial_key(trial: TrialRun, metric: str, mode: str) -> tuple:
    return (_oriented(trial.metric(metric), mode), _loss(trial), trial.trial_id)


def _config_key(members: list[TrialRun], metric: str, mode: str) -> tuple:
    score = statistics.fmean(t.metric(metric) for t in members)
    losses = [t.metric(TIEBREAK_METRIC) for t in members if t.metric(TIEBREAK_METRIC) is not None]
    return (_oriented(score, mode), statistics.fmean(losses) if losses else math.inf, min(t.trial_id for t in members))


def _oriented(value: float, mode: str) -> float:
    """Smaller is better, whatever the mode."""
    return -value if mode == "max" else value


def _loss(trial: TrialRun) -> float:
    loss = trial.metric(TIEBREAK_METRIC)
    return loss if loss is not None else math.inf


def trial_runs(items) -> list[TrialRun]:
    """TrialRuns as they are; MLflow runs flattened."""
    return [item if isinstance(item, TrialRun) else TrialRun.from_run(item) for item in items]


# ---------------------------------------------------------------- folds


def fold_rows(trials) -> list[dict]:
    """One row per configuration that ran on folds: its finished folds, mean and sample std of each
    set's stats: {"config_id", "scenario", "folds", "num_folds", "stats": {"<set>/<stat>": (mean, std, n)}}."""
    views = trial_runs(trials)
    groups: dict[str, list[TrialRun]] = defaultdict(list)
    for trial in views:
        if trial.fold and trial.finished:
            groups[trial.config_id or ""].append(trial)
    expected = {c.key: c.num_folds for c in configurations(views) if c.runs[0].fold}
    rows = []
    for config_id, members in sorted(groups.items()):
        stats = {}
        for set_name in sorted({s for t in members for s in t.eval_sets}):
            for stat in FOLD_STATS:
                values = [v for t in members if (v := t.metric(f"{set_name}/{stat}")) is not None]
                if values:
                    stats[f"{set_name}/{stat}"] = (statistics.fmean(values), sample_std(values), len(values))
        num_folds = max(expected.get(config_id, 0), len(members))
        rows.append(
            {
                "config_id": config_id,
                "scenario": members[0].scenario,
                "folds": len(members),
                "num_folds": num_folds,  # a row with folds < num_folds is incomplete: never ranked best
                "stats": stats,
            }
        )
    return rows


def fold_metrics(rows: list[dict]) -> dict[str, float]:
    """Fold statistics as parent-run metrics: folds/<config_id>/<set>/<stat>_mean and _std."""
    metrics = {}
    for row in rows:
        for key, (mean, std, _) in row["stats"].items():
            metrics[f"{Key.FOLDS_PREFIX}{row['config_id']}/{key}_mean"] = mean
            metrics[f"{Key.FOLDS_PREFIX}{row['config_id']}/{key}_std"] = std
    return metrics


def sample_std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def mean_std_text(stat: tuple[float, float, int] | None) -> str:
    """'0.820 ± 0.010'; a single fold without spread; '–' for none."""
    if stat is None:
        return "–"
    mean, std, n = stat
    return f"{mean:.3f}" if n == 1 else f"{mean:.3f} ± {std:.3f}"


# ---------------------------------------------------------------- encoders (EmoBox's table)

# EmoBox's columns: unweighted accuracy (mean recall over classes), weighted accuracy (plain accuracy), macro F1.
EMOBOX_STATS = ((Key.UAR, "UA"), (Key.ACCURACY, "WA"), (Key.MACRO_F1, "macro F1"))


@dataclass(frozen=True)
class EncoderRow:
    """One encoder (`start`) within one scenario: its selected configuration and that configuration's folds."""

    start: str
    family: str  # the trial's encoder_family tag ('' on runs from before it existed)
    scenario: str
    selected: TrialRun | None  # by the one best-trial rule among this encoder's trials (None: none finished)
    trials: int  # all of this encoder's trials in the scenario
    folds: int  # finished runs of the selected configuration (1 without --folds)
    stats: dict[str, tuple[float, float, int]]  # "<set>/<stat>" -> (mean, sample std, n), stat in EMOBOX_STATS


def start_of(trial: TrialRun) -> str:
    return trial.params.get("start") or trial.tags.get(Tag.START, "")


def varies_start(trials) -> bool:
    """The sweep compares encoders: its trials start from more than one encoder."""
    return len({start_of(t) for t in trial_runs(trials)}) > 1


def encoder_rows(trials, metric: str = DEFAULT_METRIC, mode: str = DEFAULT_MODE) -> list[EncoderRow]:
    """Per scenario and encoder: the best configuration by `best`, with EmoBox's UA, WA and macro F1 on
    each held-out set as mean and sample std over that configuration's finished folds."""
    groups: dict[tuple[str, str], list[TrialRun]] = defaultdict(list)
    for trial in trial_runs(trials):
        groups[(trial.scenario, start_of(trial))].append(trial)
    rows = []
    for (scenario, start), members in sorted(groups.items()):
        chosen = best(members, metric, mode)
        runs = _configuration_runs(chosen, members) if chosen else []
        stats = {}
        for set_name in sorted({s for t in runs for s in t.test_sets}):
            for stat, _ in EMOBOX_STATS:
                values = [v for t in runs if (v := t.metric(f"{set_name}/{stat}")) is not None]
                if values:
                    stats[f"{set_name}/{stat}"] = (statistics.fmean(values), sample_std(values), len(values))
        family = next((t.tags[Tag.ENCODER_FAMILY] for t in members if t.tags.get(Tag.ENCODER_FAMILY)), "")
        rows.append(EncoderRow(start, family, scenario, chosen, len(members), len(runs), stats))
    return rows


def _configuration_runs(chosen: TrialRun, members: list[TrialRun]) -> list[TrialRun]:
    """The finished runs of the chosen trial's configuration: all its folds, or the trial alone."""
    if chosen.fold and chosen.config_id:
        return [t for t in members if t.config_id == chosen.config_id and t.finished]
    return [chosen]


# ---------------------------------------------------------------- the paper's table


@dataclass(frozen=True)
class PaperRow:
    label: str  # an emotion, or 'accuracy', 'macro avg', 'weighted avg' (as sklearn names them)
    precision: float | None
    recall: float | None
    f1: float | None
    support: int


def paper_table(trial: TrialRun, set_name: str, report: dict | None = None) -> list[PaperRow]:
    """The paper's Tables 1-5: per emotion precision, recall, F1, support; accuracy; macro and weighted
    averages. From the trial's `classification_report_<set>.json` (`report`, sklearn's own dict) when
    given; else rebuilt from its metrics (runs that predate the JSON). Empty when there is neither."""
    from shards.schema import EMOTIONS

    if report:
        return paper_rows_from_report(report)

    pattern = re.compile(rf"^{re.escape(set_name)}/([^/]+)/support$")
    found = {m.group(1) for key in trial.metrics if (m := pattern.match(key))}
    order = trial.labels or EMOTIONS  # the corpus's class order; ESD's for runs logged before label sets
    emotions = [e for e in order if e in found] + sorted(found - set(order))
    if not emotions:
        return []
    values = {e: [trial.metric(Key.of_set(set_name, f"{e}/{m}")) or 0.0 for m in Key.CLASS_STATS] for e in emotions}
    total = int(sum(v[3] for v in values.values()))
    rows = [PaperRow(e, p, r, f, int(s)) for e, (p, r, f, s) in values.items()]
    rows.append(PaperRow("accuracy", None, None, trial.metric(Key.accuracy(set_name)), total))
    # The macro averages as logged (workers.core.metrics.ClassScores: one definition); a plain mean over
    # the listed classes only for runs that lack them.
    logged = [trial.metric(f"{set_name}/{key}") for key in ("macro_precision", "uar", "macro_f1")]
    macro = [
        value if value is not None else statistics.fmean(v[i] for v in values.values())
        for i, value in enumerate(logged)
    ]
    weighted = [sum(v[i] * v[3] for v in values.values()) / total if total else 0.0 for i in range(3)]
    rows.append(PaperRow("macro avg", *macro, total))
    rows.append(PaperRow("weighted avg", *weighted, total))
    return rows


def paper_rows_from_report(report: dict) -> list[PaperRow]:
    """sklearn's classification_report(output_dict=True) as the paper's rows, averages as sklearn computed them."""
    averages = ("macro avg", "weighted avg")
    classes = [k for k in report if k != "accuracy" and k not in averages]
    total = int(sum(report[c]["support"] for c in classes))
    rows = [
        PaperRow(c, report[c]["precision"], report[c]["recall"], report[c]["f1-score"], int(report[c]["support"]))
        for c in classes
    ]
    rows.append(PaperRow("accuracy", None, None, report.get("accuracy"), total))
    for name in averages:
        if name in report:
            row = report[name]
            rows.append(PaperRow(name, row["precision"], row["recall"], row["f1-score"], int(row["support"])))
    return rows


def classification_report(client, trial: TrialRun, set_name: str) -> dict | None:
    """The trial's `classification_report_<set>.json` artifact, or None when it has none."""
    import json
    import tempfile

    from orchestrator.tracking import download_if_logged

    with tempfile.TemporaryDirectory() as tmp:
        path = download_if_logged(client, trial.run_id, Key.classification_report(set_name), tmp)
        return json.loads(path.read_text()) if path is not None else None


def paper_table_text(rows: list[PaperRow]) -> str:
    """The table as sklearn's classification_report prints it."""
    width = max(len(r.label) for r in rows)
    lines = [f"{'':>{width}s} {'precision':>9s} {'recall':>9s} {'f1-score':>9s} {'support':>9s}"]
    for row in rows:
        cells = [_cell(row.precision), _cell(row.recall), _cell(row.f1)]
        lines.append(f"{row.label:>{width}s} " + " ".join(f"{c:>9s}" for c in cells) + f" {row.support:>9d}")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


# ---------------------------------------------------------------- reading a sweep


def find_parent(client, ref: str, experiment: str | None = None):
    """The parent run a reference names: a parent run id, a trial run id (its parent), or a sweep
    name (the latest parent run in the experiment of that name, or in `experiment`)."""
    if RUN_ID_PATTERN.match(ref):
        run = get_run(client, ref)
        if run is not None:
            parent_id = run.data.tags.get(Tag.PARENT_RUN)
            return get_run(client, parent_id) if parent_id else run
    experiment_name = experiment or ref
    found = store_call(client.get_experiment_by_name, experiment_name)
    if found is None:
        names = sorted(e.name for e in store_call(client.search_experiments, max_results=200))
        raise StoreError(
            f"no sweep or run {ref!r} in {client.tracking_uri}; experiments there: {', '.join(names) or 'none'}"
        )
    for run in iter_runs(client, found.experiment_id, order_by=["attributes.start_time DESC"]):
        tags = run.data.tags
        if Tag.PARENT_RUN in tags:
            continue
        if experiment and ref != experiment and tags.get(Tag.SWEEP) != ref:
            continue
        return run
    raise StoreError(
        f"experiment {experiment_name!r} has no sweep parent run"
        + (f" for sweep {ref!r}" if experiment and ref != experiment else "")
    )


def load_sweep(client, parent) -> SweepResults:
    experiment = store_call(client.get_experiment, parent.info.experiment_id)
    default_scenario = parent.data.tags.get(Tag.SWEEP) or experiment.name
    runs = iter_runs(
        client, parent.info.experiment_id, filter_string=f"tags.`{Tag.PARENT_RUN}` = '{parent.info.run_id}'"
    )
    trials = [TrialRun.from_run(run, default_scenario) for run in runs]
    return SweepResults(
        tracking_uri=client.tracking_uri,
        experiment_id=experiment.experiment_id,
        experiment_name=experiment.name,
        parent_id=parent.info.run_id,
        parent_name=parent.info.run_name or parent.info.run_id[:8],
        parent_status=parent.info.status,
        parent_tags=dict(parent.data.tags),
        parent_start_time=parent.info.start_time,
        parent_end_time=parent.info.end_time,
        trials=sorted(trials, key=lambda t: t.trial_id),
    )


# ---------------------------------------------------------------- several sweeps side by side

COMPARED_STATS = (Key.ACCURACY, Key.UAR, Key.MACRO_F1)  # per held-out set, for every compared sweep


class DataMismatch(ValueError):
    """Sweeps that ran on different data (or whose data is unknown): their numbers do not compare."""


@dataclass(frozen=True)
class SweepBest:
    """One sweep of a comparison and its best trial (None: none finished)."""

    sweep: SweepResults
    trial: TrialRun | None

    def stat(self, set_name: str, stat: str) -> float | None:
        return self.trial.metric(f"{set_name}/{stat}") if self.trial else None


def compare_sweeps(sweeps: list[SweepResults]) -> list[SweepBest]:
    """Each sweep's best trial by its own metric and the one rule (`best`), in the order given.

    Only sweeps on the same data compare: DataMismatch, naming each sweep's data hash, when the
    parent runs' `data_hash` tags differ or one is missing."""
    hashes = {sweep.data_hash for sweep in sweeps}
    if len(hashes) > 1 or "" in hashes:
        listed = "; ".join(f"{s.name} (run {s.parent_id[:8]}): {s.data_hash[:16] or 'no data hash'}" for s in sweeps)
        raise DataMismatch(
            f"these sweeps ran on different data, so their held-out numbers do not compare: {listed}. "
            "Compare sweeps of one corpus (same --data, unchanged shards)."
        )
    return [SweepBest(sweep, sweep.best()) for sweep in sweeps]


def compared_sets(rows: list[SweepBest]) -> list[str]:
    """The held-out sets any compared sweep's best trial was tested on, by name."""
    return sorted({s for row in rows if row.trial for s in row.trial.test_sets})
