"""MLflow calls on the writer thread: nothing lost, all in the store before each report, errors surface."""

import tempfile
import threading

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from workers.core.artifact_writer import background_logging  # noqa: E402
from workers.core.reporting import ListReporter  # noqa: E402
from workers.core.tracking import MlflowRunLogger, NullLogger  # noqa: E402


class StoreAtReport:
    """A reporter that reads the MLflow run at each report, as the driver could right after it."""

    def __init__(self, client, run_id):
        self.client, self.run_id, self.seen = client, run_id, []

    def report(self, metrics, checkpoint_dir=None):
        run = self.client.get_run(self.run_id)
        history = self.client.get_metric_history(self.run_id, "val/loss")
        files = sorted(a.path for a in self.client.list_artifacts(self.run_id))
        model = sorted(a.path for a in self.client.list_artifacts(self.run_id, "model"))
        self.seen.append(
            {"tags": dict(run.data.tags), "val_loss_steps": [m.step for m in history], "files": files + model}
        )


@pytest.fixture
def run(tracking_uri):
    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment("writer")
    return client, client.create_run(experiment).info.run_id


def test_everything_logged_before_a_report_is_in_the_store_at_that_report(run, tmp_path, tracking_uri):
    client, run_id = run
    reporter = StoreAtReport(client, run_id)
    logger, flushing = background_logging(MlflowRunLogger(tracking_uri, run_id), reporter)
    logger.set_tags({"device": "cpu", "weights": "built"})
    for step in range(1, 6):  # evaluation rounds, back to back: sent as batches
        logger.log_metrics({"val/loss": 1.0 / step, "val/accuracy": 0.1 * step}, step=step * 15)
    figure, axis = plt.subplots()
    axis.plot([0, 1], [1, 0])
    logger.log_figure(figure, "confusion_matrix_val.png")
    logger.log_text("report", "classification_report_val.txt")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.safetensors").write_bytes(b"weights")
    logger.log_artifacts(str(model_dir), "model")
    (model_dir / "model.safetensors").unlink()  # the caller's directory may go as soon as the call returns
    flushing.report({"val/accuracy": 0.5})

    seen = reporter.seen[0]
    assert seen["tags"]["device"] == "cpu" and seen["tags"]["weights"] == "built"
    assert seen["val_loss_steps"] == [15, 30, 45, 60, 75]
    assert seen["files"] == [
        "classification_report_val.txt",
        "confusion_matrix_val.png",
        "model",
        "model/model.safetensors",
    ]
    assert plt.get_fignums() == []  # the figure left pyplot's registry on the caller's thread


def test_a_failed_background_call_raises_at_the_next_report(run, tracking_uri):
    client, run_id = run
    reporter = StoreAtReport(client, run_id)
    logger, flushing = background_logging(MlflowRunLogger(tracking_uri, run_id), reporter)
    logger.set_tags({"ok": "1"})
    client.delete_run(run_id)
    client.delete_experiment(client.get_run(run_id).info.experiment_id)
    # The failure surfaces at the next call after it happened, at the latest at the report.
    with pytest.raises(RuntimeError, match="background MLflow call failed"):
        logger.log_metrics({"val/loss": 1.0}, step=1)
        logger.log_text("x", "x.txt")
        flushing.report({"val/accuracy": 0.5})
    assert reporter.seen == []


def test_disabled_returns_the_logger_and_reporter_unchanged(tracking_uri):
    logger, reporter = object(), object()
    assert background_logging(logger, reporter, enabled=False) == (logger, reporter)


def test_the_final_metric_at_the_curves_last_step_keeps_both_points_and_wins(run, tracking_uri):
    """The last evaluation round and the final metrics share a step; batched together on the writer thread,
    the curve's last point used to be overwritten. Both stay, in order, and the final one is the run's value
    even where the curve's point is larger (MLflow's latest is the largest step, then timestamp, then value)."""
    from workers.core.artifact_writer import BackgroundLogger

    client, run_id = run
    logger = BackgroundLogger(MlflowRunLogger(tracking_uri, run_id))
    curve_point = {"train/loss": 0.4, "val/loss": 0.30, "val/accuracy": 0.90}
    final = {"val/loss": 0.35, "val/accuracy": 0.80, "test_en/accuracy": 0.7}
    logger._run([("log_metrics", (curve_point, 12)), ("log_metrics", (final, 12))])  # one drain: one batch

    history = client.get_metric_history(run_id, "val/accuracy")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.timestamp)] == [(12, 0.90), (12, 0.80)]
    metrics = client.get_run(run_id).data.metrics
    assert metrics["val/accuracy"] == 0.80 and metrics["val/loss"] == 0.35 and metrics["train/loss"] == 0.4


class FailsOnce(NullLogger):
    """A logger whose first call fails once the test says so; later calls would succeed."""

    def __init__(self):
        self.go = threading.Event()
        self.failed = False
        self.logged: list[str] = []

    def set_tags(self, tags):
        self.go.wait(30)  # hold the writer until the calls behind this one are queued
        if not self.failed:
            self.failed = True
            raise ConnectionError("tracking server unreachable")

    def log_model(self, model_dir, metrics=None, step=None, model_step=0):
        self.logged.append("model")

    def log_artifacts(self, local_dir, artifact_path):
        self.logged.append(artifact_path)


def test_calls_dropped_after_an_error_delete_their_copies_and_are_named(tmp_path, monkeypatch, capsys):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the writer's copies go
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.safetensors").write_bytes(b"weights" * 1000)
    failing = FailsOnce()
    logger, flushing = background_logging(failing, ListReporter())
    logger.set_tags({"device": "cpu"})
    logger.log_model(str(model_dir))
    logger.log_artifacts(str(model_dir), "checkpoint")
    logger.log_text("report", "classification_report_val.txt")
    logger.log_metrics({"val/loss": 1.0}, step=1)
    assert len(list(scratch.iterdir())) == 2  # the two copies, queued behind the failing call
    failing.go.set()
    with pytest.raises(RuntimeError, match="not logged: the MLflow Model model/, checkpoint/, classification_report"):
        flushing.report({"val/accuracy": 0.5})
    assert list(scratch.iterdir()) == [] and failing.logged == []
    assert "not logged: the MLflow Model model/, checkpoint/, classification_report_val.txt, 1 metric" in (
        capsys.readouterr().err
    )
    logger.log_model(str(model_dir))  # the writer goes on after the error was raised
    flushing.report({"val/accuracy": 0.5})
    assert failing.logged == ["model"] and list(scratch.iterdir()) == []


class RecordsBatches(NullLogger):
    """Records each store round trip the writer makes (an MLflow run's log_batch)."""

    def __init__(self):
        self.batches: list[dict] = []

    def log_batch(self, params=None, tags=None, metrics_by_step=None):
        self.batches.append(dict(metrics_by_step or {}))


def test_training_metrics_wait_for_the_next_steps_and_a_flush_sends_them_at_once(monkeypatch):
    """Steps' metrics arriving one by one go to the store as one transaction (one per step cost a CPU trial
    ~1.7 s); flush() does not wait out the batching window (30 s here: a flush waiting it would time out)."""
    import time

    import workers.core.artifact_writer as writer

    monkeypatch.setattr(writer, "BATCH_SECONDS", 30.0)
    store = RecordsBatches()
    logger = writer.BackgroundLogger(store)
    for step in range(1, 6):
        logger.log_metrics({"train/loss": 1.0 / step}, step=step)
        time.sleep(0.05)  # a training step
    flushed = threading.Thread(target=logger.flush)
    flushed.start()
    flushed.join(timeout=10)
    assert not flushed.is_alive(), "flush() waited for the batching window"
    assert store.batches == [{step: {"train/loss": 1.0 / step} for step in range(1, 6)}]
