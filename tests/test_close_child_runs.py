"""CloseChildRuns (orchestrator/tuner.py), the Tune callback that ends trial runs, against a real MLflow
store: fake trial objects carry only what the callback reads (trial_id, config, error_file, str())."""

from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.tuner import CloseChildRuns
from workers.core.tracking import MlflowRunLogger
from workers.payload import TrackingTarget, TrialPayload
from workers.vocabulary import Tag, TrialState

SWEEP_TAGS = {Tag.SWEEP: "smoke", Tag.DATA_HASH: "f" * 64}


@pytest.fixture
def store(tracking_uri):
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment("smoke")
    parent_id = client.create_run(experiment_id, run_name="smoke-parent").info.run_id
    callback = CloseChildRuns(tracking_uri, experiment_id, parent_id, SWEEP_TAGS)
    return SimpleNamespace(client=client, experiment_id=experiment_id, parent_id=parent_id, callback=callback)


def fake_trial(trial_id: str, error_file=None):
    config = TrialPayload({}, {Tag.SCENARIO: "mixed"}).to_config()
    return SimpleNamespace(trial_id=trial_id, config=config, error_file=error_file)


def open_trial_run(store, tracking_uri, trial_id: str, completed: bool) -> str:
    """The child run as a trial creates it (find-or-create by trial id), optionally marked completed."""
    target = TrackingTarget(tracking_uri, store.experiment_id, store.parent_id, tuple(SWEEP_TAGS.items()))
    logger = MlflowRunLogger.for_trial(target, trial_id, f"run_{trial_id}")
    logger.set_tags({Tag.TRIAL_STATE: TrialState.COMPLETED if completed else TrialState.RUNNING})
    return logger.run_id


def test_a_completed_trial_run_is_finished_as_soon_as_tune_is_done_with_it(store, tracking_uri):
    run_id = open_trial_run(store, tracking_uri, "t_00000", completed=True)
    other = open_trial_run(store, tracking_uri, "t_00001", completed=True)
    store.callback.on_trial_complete(1, [], fake_trial("t_00000"))
    run = store.client.get_run(run_id)
    assert run.info.status == "FINISHED" and Tag.STOPPED_EARLY not in run.data.tags
    assert store.client.get_run(other).info.status == "RUNNING"  # only the trial Tune finished


def test_a_trial_the_scheduler_ended_before_its_final_evaluation_is_finished_and_stopped_early(store, tracking_uri):
    run_id = open_trial_run(store, tracking_uri, "t_00002", completed=False)
    store.callback.on_trial_complete(1, [], fake_trial("t_00002"))
    run = store.client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags[Tag.STOPPED_EARLY] == "true"


def test_a_failed_trial_run_is_failed_with_its_error(store, tracking_uri, tmp_path):
    run_id = open_trial_run(store, tracking_uri, "t_00003", completed=False)
    error_file = tmp_path / "error.txt"
    error_file.write_text("Traceback (most recent call last):\nValueError: shard 3 is truncated\n")
    store.callback.on_trial_error(1, [], fake_trial("t_00003", str(error_file)))
    run = store.client.get_run(run_id)
    assert run.info.status == "FAILED" and "ValueError: shard 3 is truncated" in run.data.tags[Tag.ERROR]


def test_a_trial_that_failed_before_creating_its_run_gets_a_failed_one(store):
    store.callback.on_trial_error(1, [], fake_trial("t_00004"))
    (run,) = store.client.search_runs([store.experiment_id], f"tags.{Tag.TRIAL_ID} = 't_00004'")
    assert run.info.status == "FAILED" and run.data.tags[Tag.PARENT_RUN] == store.parent_id
    assert run.data.tags[Tag.SCENARIO] == "mixed" and run.data.tags[Tag.SWEEP] == "smoke"
    assert run.data.tags[Tag.ERROR] == "trial failed"


def test_each_recovery_counts_a_retry_and_keeps_the_run_open(store, tracking_uri, tmp_path):
    run_id = open_trial_run(store, tracking_uri, "t_00005", completed=False)
    error_file = tmp_path / "error.txt"
    for attempt in (1, 2):
        error_file.write_text(f"RuntimeError: worker lost (attempt {attempt})\n")
        store.callback.on_trial_recover(1, [], fake_trial("t_00005", str(error_file)))
    run = store.client.get_run(run_id)
    assert run.data.tags[Tag.RETRIES] == "2"
    assert "attempt 2" in run.data.tags[Tag.LAST_ERROR]
    assert run.info.status == "RUNNING"
