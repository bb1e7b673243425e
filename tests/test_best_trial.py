"""One rule picks a sweep's best trial, and the driver's summary, the report and `predict --run <parent>`
all name the same winner (issue 17: they used to pick by different rules).

The store is real MLflow in a temp dir. Its best trial by the rule (best configuration by mean validation
accuracy over folds, ties broken by lower val/loss, then the configuration's best fold) is neither the
first trial listed, nor the best single trial on validation, nor the best on the test set; a trial
stopped early and a running one score higher on validation and are never chosen.
"""

from __future__ import annotations

import json
import re

import numpy as np
import soundfile as sf
from mlflow.tracking import MlflowClient
from sweep_stores import FakeTrial, synthetic_sweep

from orchestrator import predict, report, sweep
from orchestrator.grid import TrialGrid
from orchestrator.record import SweepRecord
from workers.vocabulary import SweepTag, Tag

SWEEP = "best_rule"
WINNER = "e_f1"


def trial(trial_id: str, config: str, fold: str, val: float, test: float, **extra) -> FakeTrial:
    tags = {Tag.CONFIG_ID: config, Tag.FOLD: fold, **extra.pop("tags", {})}
    return FakeTrial(trial_id, {"learning_rate": config}, {"val": val, "test_en": test}, tags=tags, **extra)


def build_store(uri: str) -> tuple[str, dict[str, str]]:
    """(parent run id, trial id -> run id)."""
    trials = [
        trial("a_f1", "cfgA", "1", val=0.95, test=0.50),  # best single trial on validation; its config is weak
        trial("a_f2", "cfgA", "2", val=0.60, test=0.50),
        trial("d_f1", "cfgD", "1", val=0.70, test=0.95),  # best on the test set: never looked at
        trial("b_f1", "cfgB", "1", val=0.85, test=0.40),  # ties cfgE on mean val, loses on val/loss
        trial("b_f2", "cfgB", "2", val=0.84, test=0.45),
        trial(WINNER, "cfgE", "1", val=0.85, test=0.60),
        trial("e_f2", "cfgE", "2", val=0.84, test=0.55),
        trial("c_f1", "cfgC", "1", val=0.99, test=0.99, tags={Tag.STOPPED_EARLY: "true"}),
        trial("r_f1", "cfgR", "1", val=0.98, test=0.98, status="RUNNING"),
        trial("x_f1", "cfgX", "1", val=0.97, test=0.97, status="FAILED", error="RuntimeError: boom"),
    ]
    parent_id = synthetic_sweep(uri, SWEEP, trials, parent_status="RUNNING")
    client = MlflowClient(uri)
    client.set_tag(parent_id, SweepTag.METRIC, "val/accuracy")
    client.set_tag(parent_id, SweepTag.MODE, "max")
    experiment_id = client.get_run(parent_id).info.experiment_id
    children = client.search_runs([experiment_id], filter_string=f"tags.`{Tag.PARENT_RUN}` = '{parent_id}'")
    run_ids = {run.data.tags[Tag.TRIAL_ID]: run.info.run_id for run in children}
    for trial_id in ("b_f1", "b_f2"):  # a higher validation loss than cfgE's at the same accuracy
        client.log_metric(run_ids[trial_id], "val/loss", 2.0, step=1)
    return parent_id, run_ids


def log_tiny_model(uri: str, run_id: str, tmp_path) -> None:
    """A real (random) model on the winner's run only: predict can load no other trial's."""
    from workers.finetune.checkpoint import save_model
    from workers.finetune.model import EmotionClassifier, build_encoder, tiny_encoder_config

    directory = save_model(EmotionClassifier(build_encoder(tiny_encoder_config())), tmp_path / "model")
    MlflowClient(uri).log_artifacts(run_id, str(directory), "model")


def test_summary_report_and_predict_name_the_same_best_trial(tracking_uri, tmp_path, capsys):
    parent_id, run_ids = build_store(tracking_uri)
    log_tiny_model(tracking_uri, run_ids[WINNER], tmp_path)
    listed = MlflowClient(tracking_uri).search_runs(
        [MlflowClient(tracking_uri).get_run(parent_id).info.experiment_id],
        filter_string=f"tags.`{Tag.PARENT_RUN}` = '{parent_id}'",
    )
    assert listed[0].data.tags[Tag.TRIAL_ID] != WINNER and listed[-1].data.tags[Tag.TRIAL_ID] != WINNER

    # The report: the selected trial of the scenario, and the best configuration over folds.
    assert report.main([parent_id, "--tracking-uri", tracking_uri, "--out", str(tmp_path / "report"), "--no-log"]) == 0
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert re.search(rf"^\| {SWEEP} \| \d+/10 \| {WINNER} \|", markdown, flags=re.M)
    assert "Best configuration by mean `val/accuracy` over folds: **cfgE**" in markdown

    # predict --run <parent>: loads the winner's model (no other trial has one).
    audio = tmp_path / "clip.wav"
    sf.write(audio, 0.1 * np.random.default_rng(0).standard_normal(16_000).astype(np.float32), 16_000)
    capsys.readouterr()
    assert predict.main(["--run", parent_id, "--tracking-uri", tracking_uri, str(audio), "--json"]) == 0
    model = json.loads(capsys.readouterr().out)["model"]
    assert model["run_id"] == run_ids[WINNER] and model["trial_id"] == WINNER

    # The driver's end-of-sweep summary: the paper table's trial and the parent's best_trial_id.
    grid = TrialGrid(SWEEP, "val/accuracy", "max", phases=(), folds="loso", tuned=("learning_rate",))
    client = MlflowClient(tracking_uri)
    experiment_id = client.get_run(parent_id).info.experiment_id
    record = SweepRecord(
        directory=str(tmp_path / "sweep"),
        sweep=SWEEP,
        tracking_uri=tracking_uri,
        experiment_id=experiment_id,
        parent_run_id=parent_id,
        data_dir="/data",
        data_hash="f" * 64,
        grid=grid.to_dict(),
        resources={},
    )
    sweep.finish(record)
    out = capsys.readouterr().out
    assert f"== {SWEEP}: trial {WINNER} fold=1" in out
    parent = client.get_run(parent_id)
    assert parent.data.tags[Tag.BEST_TRIAL_ID] == WINNER
    assert parent.data.metrics["best/test_en/accuracy"] == 0.60
    assert parent.data.metrics["best/val/accuracy"] == 0.85
