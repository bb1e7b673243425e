"""A retried trial's run says which attempt logged what: the steps between its checkpoint and the crash
are logged twice, and each entry's attempt is told by the run's tags (`attempt`, and `attempt/<n>/started_at`
per attempt: an entry belongs to the last attempt that started at or before its timestamp), never by a metric;
the final values are the last attempt's, and the tables say so."""

from collections import defaultdict

import pytest
from mlflow.tracking import MlflowClient
from ray import tune

from orchestrator.results import SweepResults, TrialRun
from orchestrator.summary import trials_table
from workers.core.reporting import ListReporter
from workers.payload import TrackingTarget, TrialPayload
from workers.trial import open_logger, run_recorded
from workers.vocabulary import Key, Tag


class InjectedCrash(RuntimeError):
    pass


class CrashAtReport(ListReporter):
    """Keeps reported checkpoints as Tune would, and crashes the trial at report number `crash_at`."""

    def __init__(self, checkpoint_root, crash_at: int):
        super().__init__(checkpoint_root)
        self.crash_at = crash_at

    def report(self, metrics, checkpoint_dir=None):
        super().report(metrics, checkpoint_dir)
        if len(self.reports) == self.crash_at:
            raise InjectedCrash(f"injected at report {self.crash_at}")


def trial_values(demo_dir, tmp_path) -> dict:
    """Head-only training, 3 epochs of 12 steps, a validation round every 4 steps."""
    return dict(
        data_dir=str(demo_dir),
        train_speakers=("0011", "0012"),
        eval_sets={"test_en": ("0015",)},
        val_fraction=0.25,
        stages=({"trainable": "head", "epochs": 3, "learning_rate": 1e-3, "batch_size": 4},),
        eval_every_steps=4,
        feature_cache_dir=str(tmp_path / "features"),
        num_threads=1,
    )


def test_a_retried_trial_tells_its_attempts_apart(demo_dir, tmp_path, tracking_uri):
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment("attempts", artifact_location=(tmp_path / "artifacts").as_uri())
    parent_id = client.create_run(experiment_id, tags={Tag.SWEEP: "attempts"}).info.run_id
    payload = TrialPayload(
        trial_values(demo_dir, tmp_path), tracking=TrackingTarget(tracking_uri, experiment_id, parent_id)
    )

    crashing = CrashAtReport(tmp_path / "tune", crash_at=2)
    with pytest.raises(InjectedCrash):
        run_recorded(payload, open_logger(payload, "t1", "t1"), crashing)
    assert crashing.checkpoints[0] is not None, "the first epoch's best state is checkpointed"
    retry = tune.Checkpoint.from_directory(str(crashing.checkpoints[0]))
    final = run_recorded(payload, open_logger(payload, "t1", "t1"), ListReporter(), checkpoint=retry)

    (run,) = client.search_runs([experiment_id], filter_string="tags.trial_id = 't1'")
    assert run.data.tags[Tag.ATTEMPT] == "2"
    assert {Tag.attempt_started(1), Tag.attempt_started(2)} <= set(run.data.tags)
    assert not [k for k in run.data.metrics if k.startswith("trial/")], "no counter or timestamp metric"
    trial = TrialRun.from_run(run)
    attempts_by_step = defaultdict(list)
    for entry in client.get_metric_history(run.info.run_id, Key.curve("val/loss")):
        attempts_by_step[entry.step].append(float(trial.attempt_at(entry.timestamp)))
    relogged = {step: sorted(a) for step, a in attempts_by_step.items() if len(a) > 1}
    assert relogged, "the retry logs the steps after its checkpoint again"
    assert any(a[:2] == [1.0, 2.0] for a in relogged.values()), relogged
    assert all(sorted(a) == [1.0, 2.0] for a in relogged.values()), relogged
    assert run.data.metrics["test_en/accuracy"] == pytest.approx(final["test_en/accuracy"])
    assert trial.attempt == 2
    sweep = SweepResults(tracking_uri, experiment_id, "attempts", parent_id, "", "FINISHED", {}, None, None, [trial])
    table = trials_table(sweep, [], folds=False)
    assert Tag.ATTEMPT in table.splitlines()[0]
