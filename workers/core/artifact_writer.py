"""A trial's MLflow calls on a background thread, so figures and store round trips never stall training.

`background_logging(logger, reporter)` returns a logger whose calls are queued and run, in order, by
one writer thread, and a reporter that waits for the queue to drain before each Tune report: what a
report (the final one above all) announces is in the store when Tune sees it, also when a scheduler
stops the trial inside that report. Metrics queued back to back go to the store as one batch, and
metrics alone wait up to BATCH_SECONDS for more (a flush, or any other call, sends them at once): one
store transaction per step cost a CPU trial ~4 ms a step of its cores (~1.7 s a smoke trial).

Figures are detached from pyplot on the caller's thread (pyplot's figure registry is not
thread-safe) and rendered by the writer (Agg renders a detached figure on any thread). Directories
handed to `log_artifacts` are copied first: the caller may delete them as soon as the call returns.

After a call fails, the calls queued behind it are not run (the trial sees the error at its next call
or report): their temporary copies (the whole model for `log_model`) are deleted, and what was not
logged is named on stderr and in the error the trial raises.
"""

from __future__ import annotations

import queue
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from workers.core.phases import Phase, phase

IDLE_SECONDS = 5.0
BATCH_SECONDS = 1.0  # how long queued training metrics wait for the next steps' (a flush sends at once)
SEND_NOW = "_send_now"  # flush()'s marker: the metrics gathered so far go now


class BackgroundLogger:
    """Wraps a RunLogger: the same interface, calls run on a writer thread. `flush()` waits and re-raises."""

    def __init__(self, logger):
        self.logger = logger
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._not_logged: list[str] = []  # what failed or was dropped since the error flush() raises next

    # --- the RunLogger interface
    def log_params(self, params: dict) -> None:
        self._put("log_params", dict(params))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._put("log_metrics", {k: float(v) for k, v in metrics.items()}, step)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._put("log_text", text, artifact_file)

    def log_figure(self, figure, artifact_file: str) -> None:
        import matplotlib.pyplot as plt

        plt.close(figure)  # out of pyplot's registry here; the writer only renders the Figure object
        self._put("_log_detached_figure", figure, artifact_file)

    def log_artifacts(self, local_dir: str, artifact_path: str) -> None:
        self._put_copy("_log_copied_artifacts", local_dir, "artifacts-", artifact_path)

    def log_model(self, model_dir: str, metrics=None, step: int | None = None, model_step: int = 0) -> None:
        metrics = None if metrics is None else {k: float(v) for k, v in metrics.items()}
        self._put_copy("_log_copied_model", model_dir, "model-", metrics, step, model_step)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._put("set_tags", dict(tags))

    def log_dict(self, dictionary: dict, artifact_file: str) -> None:
        self._put("log_dict", dict(dictionary), artifact_file)

    def log_datasets(self, splits: list) -> None:
        self._put("log_datasets", list(splits))

    def run_tags(self) -> dict[str, str]:
        self.flush()  # the run's tags as they are once every queued write landed
        return self.logger.run_tags()

    def completed_metrics(self) -> dict[str, float] | None:
        return self.logger.completed_metrics()

    # --- control
    def flush(self) -> None:
        """Wait until every queued call has run; raise the first error a call raised (naming what was not logged)."""
        with phase(Phase.LOGGING_WAIT):
            with self._lock:
                if self._thread is not None:  # it may be gathering metrics: send them now
                    self._queue.put((SEND_NOW, ()))
            self._queue.join()
        if self._error is not None:
            error, self._error = self._error, None
            not_logged, self._not_logged = self._not_logged, []
            raise RuntimeError(
                f"a background MLflow call failed: {error!r}; not logged: {', '.join(not_logged) or 'nothing else'}"
            ) from error

    def _put_copy(self, method: str, directory: str, prefix: str, *args) -> None:
        """Queue `method` on a copy of `directory`; the copy goes when the call is not queued after all."""
        copy = Path(tempfile.mkdtemp(prefix=prefix)) / Path(directory).name
        try:
            shutil.copytree(directory, copy)
            self._put(method, str(copy), *args)
        except BaseException:
            shutil.rmtree(copy.parent, ignore_errors=True)
            raise

    def _put(self, method: str, *args) -> None:
        if self._error is not None:
            self.flush()  # surface the failure at the next call instead of losing later logs silently
        with self._lock:
            self._queue.put((method, args))
            if self._thread is None:  # started on demand; it ends after IDLE_SECONDS without work
                self._thread = threading.Thread(target=self._drain, name="mlflow-writer", daemon=True)
                self._thread.start()

    def _drain(self) -> None:
        while True:
            try:
                calls = [self._queue.get(timeout=IDLE_SECONDS)]
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None  # a reused worker keeps no idle thread per past trial
                        return
                continue
            self._gather(calls)
            try:
                if self._error is None:
                    with phase(Phase.LOGGING, call="writer"):  # the queued calls, run on this thread
                        self._run(calls)
                else:
                    self._drop(calls)
            except BaseException as error:  # kept for flush(); the thread goes on draining
                self._error = error
            finally:
                for _ in calls:
                    self._queue.task_done()

    def _gather(self, calls: list) -> None:
        """Add to `calls` what is already waiting and, while they are only metrics, what comes within
        BATCH_SECONDS: back-to-back metrics become one batch."""
        deadline = time.monotonic() + BATCH_SECONDS
        while True:
            waiting = calls[-1][0] == "log_metrics" and time.monotonic() < deadline
            try:
                calls.append(
                    self._queue.get(timeout=deadline - time.monotonic()) if waiting else self._queue.get_nowait()
                )
            except (queue.Empty, ValueError):  # ValueError: the deadline passed since `waiting` was computed
                return

    def _send_now(self) -> None:
        """flush()'s marker: nothing to run; the batch before it was sent when the marker was reached."""

    def _run(self, calls: list) -> None:
        """Run the calls in order; consecutive params, tags and metrics go to the store as one batch."""
        batch = _Batch()
        for index, (method, args) in enumerate(calls):
            if batch.take(method, args):
                continue
            try:
                self._send(batch)
                getattr(self, method)(*args) if method.startswith("_") else getattr(self.logger, method)(*args)
            except BaseException:
                self._drop(calls[index:])  # the failed call (its copy went in its own finally) and the rest
                raise
        self._send(batch)

    def _drop(self, calls: list) -> None:
        """Calls that will not run after an error: delete their temporary copies, note what they would have logged."""
        artifacts, others = [], 0
        for method, args in calls:
            if method == SEND_NOW:
                continue
            if method in ("_log_copied_model", "_log_copied_artifacts"):
                shutil.rmtree(Path(args[0]).parent, ignore_errors=True)
            name = _artifact_name(method, args)
            if name:
                artifacts.append(name)
            else:
                others += 1
        not_logged = artifacts + ([f"{others} metric/tag/param call(s)"] if others else [])
        if not_logged:
            self._not_logged += not_logged
            print(f"MLflow writer: after an error, not logged: {', '.join(not_logged)}", file=sys.stderr, flush=True)

    def _send(self, batch: _Batch) -> None:
        if batch.empty():
            return
        if hasattr(self.logger, "log_batch"):  # an MLflow run: one round trip
            self.logger.log_batch(params=batch.params, tags=batch.tags, metrics_by_step=batch.metrics)
        else:
            if batch.params:
                self.logger.log_params(batch.params)
            if batch.tags:
                self.logger.set_tags(batch.tags)
            for step, metrics in batch.metrics.items():
                self.logger.log_metrics(metrics, step=step)
        batch.clear()

    def _log_detached_figure(self, figure, artifact_file: str) -> None:
        """Render on this thread and log the file (never through pyplot, which the caller's thread owns)."""
        directory = Path(tempfile.mkdtemp(prefix="figure-"))
        try:
            path = directory / artifact_file
            path.parent.mkdir(parents=True, exist_ok=True)
            figure.savefig(path)
            self.logger.log_artifacts(str(directory), None)
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def _log_copied_model(self, model_dir: str, metrics, step, model_step) -> None:
        try:
            self.logger.log_model(model_dir, metrics, step=step, model_step=model_step)
        finally:
            shutil.rmtree(Path(model_dir).parent, ignore_errors=True)

    def _log_copied_artifacts(self, local_dir: str, artifact_path: str) -> None:
        try:
            self.logger.log_artifacts(local_dir, artifact_path)
        finally:
            shutil.rmtree(Path(local_dir).parent, ignore_errors=True)


def _artifact_name(method: str, args: tuple) -> str:
    """The artifact a queued call logs ("": none, a metric, tag or param call)."""
    if method == "_log_copied_model":
        return "the MLflow Model model/"
    if method == "_log_copied_artifacts":
        return f"{args[1] or Path(args[0]).name}/"
    if method in ("log_text", "log_dict", "_log_detached_figure"):
        return args[1]
    if method == "log_datasets":
        return "the dataset inputs"
    return ""


class _Batch:
    """Params, tags and metrics of consecutive calls, merged in call order (a later tag wins). A metric
    already in the batch at the same step is not merged: both values are logged, in call order."""

    def __init__(self):
        self.clear()

    def clear(self) -> None:
        self.params: dict = {}
        self.tags: dict[str, str] = {}
        self.metrics: dict[int | None, dict[str, float]] = {}

    def empty(self) -> bool:
        return not (self.params or self.tags or self.metrics)

    def take(self, method: str, args: tuple) -> bool:
        if method == "log_metrics":
            metrics, step = args
            if set(metrics) & set(self.metrics.get(step, {})):
                return False  # a second value at the same step (the final metric after the curve's last point)
            self.metrics.setdefault(step, {}).update(metrics)
        elif method == "set_tags":
            self.tags.update(args[0])
        elif method == "log_params" and not set(args[0]) & set(self.params):
            self.params.update(args[0])
        else:
            return False
        return True


class FlushingReporter:
    """Drains the logger's queue before every Tune report (a scheduler may stop the trial inside one)."""

    def __init__(self, reporter, logger: BackgroundLogger):
        self.reporter = reporter
        self.logger = logger

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None = None) -> None:
        self.logger.flush()
        self.reporter.report(metrics, checkpoint_dir=checkpoint_dir)


def background_logging(logger, reporter, enabled: bool = True):
    """(logger, reporter) with MLflow calls moved to a writer thread; unchanged when not enabled."""
    if not enabled:
        return logger, reporter
    background = BackgroundLogger(logger)
    return background, FlushingReporter(reporter, background)
