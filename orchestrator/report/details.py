"""The section 'Selected trials in detail': per selected trial, the paper's table on every held-out set,
beside the trial's own confusion matrix, and its reliability diagram (both fetched from its run)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from orchestrator import results, tracking
from orchestrator.document import Figure, Heading, Row, Table, Text
from orchestrator.report.cells import blank, config_text, num, slug
from orchestrator.report.declaration import Declaration
from orchestrator.results import TIEBREAK_METRIC, SweepResults, TrialRun
from workers.kinds import FINETUNE
from workers.vocabulary import Key, Tag


def selected_details(
    client,
    sweep: SweepResults,
    chosen: dict[str, TrialRun | None],
    knobs: list[str],
    out_dir: Path,
    declaration: Declaration,
) -> list:
    blocks: list = [Heading(2, "Selected trials in detail")]
    for scenario in sorted(chosen, key=declaration.scenario_key):
        if chosen[scenario] is not None:
            blocks += scenario_detail(client, scenario, chosen[scenario], knobs, out_dir, sweep.metric)
    return blocks if len(blocks) > 1 else []


def scenario_detail(client, scenario: str, trial: TrialRun, knobs: list[str], out_dir: Path, metric: str) -> list:
    blocks: list = [Heading(3, f"{scenario}: trial {trial.trial_id}"), Text(" ".join(_facts(trial, knobs, metric)))]
    for set_name in trial.test_sets:
        blocks.append(Heading(4, set_name + _set_origin(trial, set_name)))
        table = paper_table(trial, set_name, results.classification_report(client, trial, set_name))
        if table is None:
            dimensional = trial.metric(Key.of_set(set_name, Key.CCC)) is not None
            where = "; its CCC per dimension is under 'Dimensional emotion'" if dimensional else ""
            blocks.append(Text(f"No per-class metrics for `{set_name}`{where}."))
            continue
        ece = trial.metric(Key.of_set(set_name, Key.ECE))
        table = Table(
            table.header,
            table.rows,
            caption=f"{scenario}, trial {trial.trial_id}, on {set_name}"
            + (f"; expected calibration error {ece:.3f}" if ece is not None else ""),
        )
        confusion = _fetch_image(client, trial, Key.confusion_matrix(set_name), out_dir, scenario)
        reliability = _fetch_image(client, trial, Key.reliability(set_name), out_dir, scenario)
        side = [table]
        if confusion:
            side.append(Figure([confusion], caption="rows: true emotion; shading: share of the row"))
        else:
            side.append(Text(f"(the run has no `{Key.confusion_matrix(set_name)}` artifact)"))
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


def _facts(trial: TrialRun, knobs: list[str], metric: str) -> list[str]:
    """The trial in a few sentences: its run, what it started from, its knobs, speakers, score and labels."""
    kind = trial.tags.get(Tag.TRIAL_KIND, FINETUNE)
    what = f"start `{results.start_of(trial) or '?'}`" if kind == FINETUNE else f"a `{kind}` baseline"
    facts = [f"Run `{trial.run_id}`; {what}; {config_text(trial, knobs) or 'no tuned knobs'}."]
    if trial.tags.get(Tag.TRAIN_SPEAKERS):
        facts.append(f"Trained on speakers {trial.tags[Tag.TRAIN_SPEAKERS]}.")
    facts.append(
        f"`{metric}` {num(trial.metric(metric), 3)}, `{TIEBREAK_METRIC}` {num(trial.metric(TIEBREAK_METRIC), 3)}."
    )
    if trial.labels:
        facts.append(f"Labels: {', '.join(trial.labels)}.")
    return facts


def _set_origin(trial: TrialRun, set_name: str) -> str:
    """' (held-out speakers 0015)', or for another corpus ' (another corpus: DIR; 12 clips left out: ...)'."""
    corpus = trial.corpus_of(set_name)
    if corpus is None:
        speakers = trial.speakers_of(set_name)
        return f" (held-out speakers {speakers})" if speakers else ""
    unmapped = trial.metric(Key.of_set(set_name, Key.UNMAPPED_CLIPS))
    left_out = f"; {int(unmapped)} clips left out, their labels map to none of the training labels" if unmapped else ""
    return f" (another corpus: {corpus}{left_out})"


def paper_table(trial: TrialRun, set_name: str, report: dict | None = None) -> Table | None:
    """The paper's Tables 1-5 (`results.paper_table`, from the trial's JSON report when it has one) as a table."""
    rows = results.paper_table(trial, set_name, report)
    if not rows:
        return None
    cells = [
        [row.label[:1].upper() + row.label[1:], blank(row.precision), blank(row.recall), num(row.f1), f"{row.support}"]
        for row in rows
    ]
    return Table(["", "Precision", "Recall", "F1-score", "Support"], cells)


def _fetch_image(client, trial: TrialRun, artifact: str, out_dir: Path, scenario: str) -> str | None:
    """Copy a trial's image artifact into images/; None when the run has none."""
    target = out_dir / "images" / f"{slug(scenario)}_{trial.trial_id}_{artifact}"
    with tempfile.TemporaryDirectory() as tmp:
        logged = tracking.download_if_logged(client, trial.run_id, artifact, tmp)  # None: an older or crashed trial
        if logged is None:
            return None
        target.write_bytes(logged.read_bytes())
    return str(target.relative_to(out_dir))
