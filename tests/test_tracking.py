"""A trial's MLflow run through the trial-side logger, on a real MLflow store in a temp dir."""

import pytest
from mlflow.tracking import MlflowClient

from workers.core.reporting import ListReporter
from workers.core.tracking import MlflowRunLogger
from workers.payload import TrackingTarget
from workers.trial import MarkCompleted, replay_if_completed
from workers.vocabulary import Tag, TrialState


def sweep_target(tracking_uri: str) -> TrackingTarget:
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment("tracking")
    parent = client.create_run(experiment_id).info.run_id
    return TrackingTarget(tracking_uri, experiment_id, parent, tags=((Tag.SCENARIO, "smoke"),))


def trial_logger(tracking_uri: str, record_attempt: bool = False) -> MlflowRunLogger:
    return MlflowRunLogger.for_trial(sweep_target(tracking_uri), "t0", "t0", record_attempt=record_attempt)


def test_a_restored_trial_finds_its_run_and_logs_only_the_params_it_lacks(tracking_uri):
    target = sweep_target(tracking_uri)
    logger = MlflowRunLogger.for_trial(target, "t0", run_name="t0")
    logger.log_params({"seed": 0, "eval_sets": {"test_en": ("0015",)}})
    again = MlflowRunLogger.for_trial(target, "t0", run_name="t0")
    assert again.run_id == logger.run_id
    again.log_params({"seed": 0, "eval_sets": {"test_en": ("0015",)}, "num_threads": 2})
    params = MlflowClient(tracking_uri).get_run(logger.run_id).data.params
    assert params == {"seed": "0", "eval_sets.test_en": "('0015',)", "num_threads": "2"}
    with pytest.raises(ValueError, match="num_threads"):  # a changed value is an error, not silently dropped
        again.log_params({"num_threads": 3, "pooling": "mean"})


def test_many_tags_and_metrics_land_in_one_run_whatever_the_batch_limits(tracking_uri):
    logger = trial_logger(tracking_uri)
    logger.set_tags({f"tag{i}": i for i in range(250)})
    logger.log_metrics({f"m/{i}": float(i) for i in range(1200)}, step=3)
    data = MlflowClient(tracking_uri).get_run(logger.run_id).data
    assert all(data.tags[f"tag{i}"] == str(i) for i in range(250))
    assert data.metrics == {f"m/{i}": float(i) for i in range(1200)}


def test_a_completed_run_replays_its_final_metrics_instead_of_training(tracking_uri):
    logger = trial_logger(tracking_uri, record_attempt=True)
    tags = MlflowClient(tracking_uri).get_run(logger.run_id).data.tags
    assert tags[Tag.TRIAL_STATE] == TrialState.RUNNING and tags[Tag.PID] and tags[Tag.HOST]
    assert not replay_if_completed(logger, ListReporter(), checkpoint=None)

    tune_side = ListReporter()
    completed = MarkCompleted(tune_side, logger, ("test_en",))
    completed.report({"val/loss": 0.5, "epoch": 1})  # not the final report: the run stays running
    assert logger.completed_metrics() is None
    logger.log_metrics({"test_en/accuracy": 0.75, "val/loss": 0.5})
    completed.report({"test_en/accuracy": 0.75, "val/loss": 0.5})
    assert MlflowClient(tracking_uri).get_run(logger.run_id).data.tags[Tag.TRIAL_STATE] == TrialState.COMPLETED

    replayed = ListReporter()
    assert replay_if_completed(logger, replayed, checkpoint=None)
    assert replayed.reports == [{"test_en/accuracy": 0.75, "val/loss": 0.5}]
    run = MlflowClient(tracking_uri).get_run(logger.run_id)
    assert run.data.tags[Tag.ATTEMPT] == "1" and set(run.data.metrics) == {"test_en/accuracy", "val/loss"}
