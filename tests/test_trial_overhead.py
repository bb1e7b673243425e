"""What a reused worker does around run_trial: few MLflow round trips, and evaluation batches sized by device."""

import pytest
import torch
from mlflow.tracking import MlflowClient

from workers.core.artifact_writer import background_logging
from workers.core.reporting import ListReporter
from workers.finetune.batch_sources import CPU_EVAL_BATCH_SIZE, EVAL_MEMORY_SHARE, MAX_EVAL_BATCH_SIZE, eval_batch_size
from workers.finetune.model import eval_peak_bytes, xlsr53_encoder_config
from workers.payload import TrackingTarget, TrialPayload
from workers.trial import open_logger, replay_if_completed, run_recorded
from workers.vocabulary import Tag, TrialState

CALLS = ("search_runs", "create_run", "update_run", "set_terminated", "log_batch", "get_run")


@pytest.fixture
def round_trips(monkeypatch):
    """Every call the trial side makes on a (real) MlflowClient, by name."""
    seen: list[str] = []
    for name in CALLS:
        real = getattr(MlflowClient, name)

        def counted(self, *args, _real=real, _name=name, **kwargs):
            seen.append(_name)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(MlflowClient, name, counted)
    return seen


def sweep(tracking_uri: str) -> TrackingTarget:
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment("overhead")
    parent = client.create_run(experiment_id).info.run_id
    return TrackingTarget(tracking_uri, experiment_id, parent)


def trial(tracking: TrackingTarget, tags: dict | None = None, values: dict | None = None) -> TrialPayload:
    """A trial's payload as the driver hands it over (workers.payload)."""
    return TrialPayload(values or {}, tags or {}, tracking)


def test_a_new_trial_run_is_opened_and_its_attempt_recorded_in_one_search_and_one_create(tracking_uri, round_trips):
    tracking = sweep(tracking_uri)
    round_trips.clear()
    logger = open_logger(trial(tracking, {Tag.SCENARIO: "smoke"}), "t0", "t0")
    assert not replay_if_completed(logger, ListReporter(), checkpoint=None)
    assert round_trips == ["search_runs", "create_run"]

    # The attempt's tags ride with the create; the first write is the params (no get_run: a new run has none).
    logger.log_batch(params={"seed": 0}, tags={Tag.DEVICE: "cpu"})
    assert round_trips[2:] == ["log_batch"]
    run = MlflowClient(tracking_uri).get_run(logger.run_id)
    assert run.data.tags[Tag.SCENARIO] == "smoke" and run.data.tags[Tag.TRIAL_STATE] == TrialState.RUNNING
    assert run.data.tags[Tag.PID] and run.data.tags[Tag.DEVICE] == "cpu" and run.data.params == {"seed": "0"}
    assert run.data.tags[Tag.ATTEMPT] == "1" and Tag.attempt_started(1) in run.data.tags
    assert run.data.metrics == {}, "attempt counters and timestamps are tags, never metrics"


def test_a_found_unfinished_run_records_the_new_attempt_in_one_batch(tracking_uri, round_trips):
    tracking = sweep(tracking_uri)
    open_logger(trial(tracking), "t0", "t0").log_params({"seed": 0})
    round_trips.clear()
    again = open_logger(trial(tracking, {Tag.FOLD: "f1"}), "t0", "t0")
    assert not replay_if_completed(again, ListReporter(), checkpoint=None)
    again.log_params({"seed": 0})  # already there: nothing to send, and the search told it so
    assert round_trips == ["search_runs", "update_run", "log_batch"]
    client = MlflowClient(tracking_uri)
    tags = client.get_run(again.run_id).data.tags
    assert tags[Tag.ATTEMPT] == "2" and Tag.attempt_started(2) in tags
    assert client.get_run(again.run_id).data.tags[Tag.FOLD] == "f1"


def test_a_found_completed_run_replays_without_recording_an_attempt(tracking_uri, round_trips):
    tracking = sweep(tracking_uri)
    first = open_logger(trial(tracking), "t0", "t0")
    first.log_batch(tags={Tag.TRIAL_STATE: TrialState.COMPLETED}, metrics_by_step={3: {"test_en/accuracy": 0.5}})
    round_trips.clear()
    again = open_logger(trial(tracking), "t0", "t0")
    replayed = ListReporter()
    assert replay_if_completed(again, replayed, checkpoint=None)
    assert replayed.reports == [{"test_en/accuracy": 0.5}]
    assert "get_run" not in round_trips
    assert MlflowClient(tracking_uri).get_run(again.run_id).data.tags[Tag.ATTEMPT] == "1"


def test_an_attempt_that_fails_before_its_first_write_still_counts(tracking_uri, demo_dir):
    tracking = sweep(tracking_uri)
    logger = open_logger(trial(tracking), "t0", "t0")
    values = {"start": "tiny", "data_dir": str(demo_dir), "train_speakers": ("9999",)}
    with pytest.raises(ValueError, match="9999"):
        run_recorded(trial(tracking, values=values), logger, ListReporter())
    assert MlflowClient(tracking_uri).get_run(logger.run_id).data.tags[Tag.ATTEMPT] == "1"


def test_the_writer_sends_consecutive_params_tags_and_metrics_as_one_batch(tracking_uri, round_trips):
    tracking = sweep(tracking_uri)
    logger, _ = background_logging(open_logger(trial(tracking), "t0", "t0"), ListReporter())
    round_trips.clear()
    queued = [  # what the writer takes from its queue in one go (as when the calls come faster than the store)
        ("log_params", ({"seed": 0, "eval_sets": {"test_en": ("0015",)}},)),
        ("set_tags", ({Tag.DEVICE: "cpu"},)),
        ("log_metrics", ({"val/loss": 1.0}, 1)),
        ("set_tags", ({Tag.DEVICE: "cpu:0"},)),  # a later value wins
        ("log_text", ("report", "report.txt")),
        ("log_metrics", ({"val/loss": 0.5}, 2)),
    ]
    logger._run(queued)
    assert round_trips == ["log_batch", "log_batch"]  # the text between the two batches keeps its place
    client = MlflowClient(tracking_uri)
    run = client.get_run(logger.logger.run_id)
    assert run.data.params == {"seed": "0", "eval_sets.test_en": "('0015',)"}
    assert run.data.tags[Tag.DEVICE] == "cpu:0" and run.data.tags[Tag.ATTEMPT] == "1"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val/loss")] == [(1, 1.0), (2, 0.5)]


def test_evaluation_batches_keep_the_measured_cpu_size_and_fill_free_gpu_memory():
    xlsr = xlsr53_encoder_config()
    cuda = torch.device("cuda")
    assert eval_batch_size(0, torch.device("cpu"), xlsr, 8.1) == CPU_EVAL_BATCH_SIZE
    assert eval_batch_size(24, cuda, xlsr, 8.1, free_bytes=10**12) == 24  # asked for: as asked
    free = 8 * 2**30
    size = eval_batch_size(0, cuda, xlsr, 8.1, bf16=True, free_bytes=free)
    budget = free * EVAL_MEMORY_SHARE
    assert eval_peak_bytes(xlsr, size, 8.1) <= budget < eval_peak_bytes(xlsr, size + 1, 8.1)
    assert eval_batch_size(0, cuda, xlsr, 8.1, bf16=False, free_bytes=free) < size  # float32 values: fewer
    assert eval_batch_size(0, cuda, xlsr, 8.1, free_bytes=10**15) == MAX_EVAL_BATCH_SIZE
    assert eval_batch_size(0, cuda, xlsr, 8.1, free_bytes=0) == 1
    assert eval_batch_size(0, cuda, object(), 8.1, free_bytes=free) == CPU_EVAL_BATCH_SIZE  # not modelled


class FinishedTrial:
    """What CloseChildRuns reads of a Tune trial."""

    def __init__(self, trial_id: str):
        self.trial_id, self.config = trial_id, {}

    def __str__(self) -> str:
        return self.trial_id


def test_the_driver_closes_a_finished_trial_run_with_one_search(tracking_uri, round_trips):
    from orchestrator.tuner import CloseChildRuns

    tracking = sweep(tracking_uri)
    completed = open_logger(trial(tracking), "done", "done")
    completed.set_tags({Tag.TRIAL_STATE: TrialState.COMPLETED})
    stopped = open_logger(trial(tracking), "stopped", "stopped")
    close = CloseChildRuns(tracking_uri, tracking.experiment_id, tracking.parent_run_id, {})
    round_trips.clear()
    close.on_trial_complete(0, [], FinishedTrial("done"))
    assert round_trips == ["search_runs", "set_terminated"]  # nothing to tag: a completed run
    close.on_trial_complete(0, [], FinishedTrial("stopped"))  # stopped by the scheduler before its final report
    client = MlflowClient(tracking_uri)
    assert Tag.STOPPED_EARLY not in client.get_run(completed.run_id).data.tags
    assert client.get_run(stopped.run_id).data.tags[Tag.STOPPED_EARLY] == "true"
    assert {client.get_run(r).info.status for r in (completed.run_id, stopped.run_id)} == {"FINISHED"}
