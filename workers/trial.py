"""The Tune entry of every trial: its payload in, its kind's run function called, its MLflow run kept.

One way through, top to bottom (`config` is Tune's dict, `payload` the same typed, `values` its config
values, `cfg` the typed config of its kind, `logger` its MLflow run):

    train_emotion(config)                       Tune calls it with the config as Tune resolved it
      payload = TrialPayload.from_config(config)  workers.payload: the one definition of that config
      logger = open_logger(payload, ...)        its child run found or created (named after its index and
                                                label), this attempt recorded in tags only (workers.core.
                                                tracking: CUDA_VISIBLE_DEVICES, HOST, RAY_NODE_ID, PID,
                                                STARTED_AT, ATTEMPT and attempt/<n>/started_at)
      replay_if_completed(logger, ...)          a run already marked completed replays its final
                                                metrics to Tune: a trial never trains twice
      run_recorded(payload, logger, ...)        cfg from its kind (workers.kinds), `init_from` given as
                                                an MLflow URI fetched once per node, then the kind's run
                                                function, continuing from Tune's checkpoint if resumable

No counter or timestamp is a metric (the MLflow UI's charts and Models tab show metrics first): a retry
logs the steps between its checkpoint and the crash again, and an entry belongs to the last attempt
that started at or before its timestamp. Import-light: torch loads inside the run function.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path

from workers.kinds import FINETUNE, trial_kind
from workers.payload import TrialPayload
from workers.vocabulary import Key, Tag, TrialState, trial_run_name


def train_emotion(config: dict) -> None:
    from ray import tune

    from workers.core.reporting import TuneReporter

    payload = TrialPayload.from_config(config)
    context = tune.get_context()
    run_name = trial_run_name(context.get_trial_id(), payload.label) if payload.label else context.get_trial_name()
    logger = open_logger(payload, context.get_trial_id(), run_name)
    reporter = TuneReporter()
    checkpoint = tune.get_checkpoint()
    if replay_if_completed(logger, reporter, checkpoint):
        return
    run_recorded(payload, logger, reporter, checkpoint)


def open_logger(payload: TrialPayload, trial_id: str, trial_name: str, record_attempt: bool = True):
    """The trial's run, found or created, with the sweep's and the trial's tags current (a reused run:
    restore, retry), and this attempt recorded in the same round trips (`record_attempt`)."""
    from workers.core.tracking import MlflowRunLogger, NullLogger

    if payload.tracking is None:
        return NullLogger()
    target = dataclasses.replace(payload.tracking, tags=payload.tracking.tags + tuple(payload.tags.items()))
    return MlflowRunLogger.for_trial(target, trial_id, trial_name, record_attempt=record_attempt)


def replay_if_completed(logger, reporter, checkpoint) -> bool:
    """A trial that already completed (its driver died before Tune saw it) reports again, trains not."""
    completed = logger.completed_metrics()
    if completed is None:
        return False
    metrics = {k: v for k, v in completed.items() if not k.startswith(Key.CURVE_PREFIX)}
    with _checkpoint_dir(checkpoint) as directory:
        reporter.report(metrics, checkpoint_dir=directory)
    return True


def run_recorded(payload: TrialPayload, logger, reporter, checkpoint=None, **hooks) -> dict:
    """Run the trial of the payload's kind on its values, the run marked completed with the final report;
    returns the final metrics."""
    kind = trial_kind(payload.kind or FINETUNE)
    cfg = kind.config_from(payload.values)
    try:
        if getattr(cfg, "init_from", ""):
            tracking_uri = payload.tracking.tracking_uri if payload.tracking else None
            cfg = dataclasses.replace(cfg, init_from=local_model_dir(cfg.init_from, tracking_uri))
        run = kind.run_function()
        reporter = MarkCompleted(reporter, logger, tuple(cfg.eval_sets))
        if not kind.resumable:
            return run(cfg, logger, reporter, **hooks)
        with _checkpoint_dir(checkpoint) as resume_dir:
            if payload.mutable:  # PBT may change these mid-trial: their history as metrics, not params
                from workers.core.param_history import ParamHistory, RepeatCheckpoint

                logger = ParamHistory(logger, payload.mutable, resume_dir)
                reporter = RepeatCheckpoint(reporter, resume_dir)
            return run(cfg, logger, reporter, resume_dir=resume_dir, **hooks)
    except BaseException:
        if hasattr(logger, "send_pending"):
            logger.send_pending()  # whatever waits for the run's next write: the failed attempt leaves it
        raise


class MarkCompleted:
    """Marks the run completed just before the final report (the one with the held-out sets' metrics).

    Before, not after: a scheduler (ASHA) may stop the trial on that very report, and then
    `tune.report` never returns.
    """

    def __init__(self, reporter, logger, eval_sets: tuple[str, ...]):
        self.reporter = reporter
        self.logger = logger
        # A set's final metrics: its accuracy, or a dimensional trial's mean CCC (task 'dimensions').
        self.final_keys = [(Key.accuracy(name), Key.of_set(name, Key.CCC)) for name in eval_sets]

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None = None) -> None:
        if all(any(key in metrics for key in keys) for keys in self.final_keys):
            self.logger.set_tags({Tag.ENDED_AT: f"{time.time():.3f}", Tag.TRIAL_STATE: TrialState.COMPLETED})
        self.reporter.report(metrics, checkpoint_dir=checkpoint_dir)


def local_model_dir(init_from: str, tracking_uri: str | None) -> str:
    """A local directory for `init_from`: as given, or an MLflow model fetched once per node
    (workers/core/model_cache.py: keyed by server and version, an alias resolved first)."""
    remote = init_from.startswith(("runs:/", "models:/")) or (
        "://" in init_from and not init_from.startswith("file://")
    )
    if not remote:
        return init_from.removeprefix("file://")
    from workers.core.model_cache import cached_model_dir
    from workers.core.tracking import download_model

    return str(cached_model_dir(init_from, tracking_uri, download_model))


@contextlib.contextmanager
def _checkpoint_dir(checkpoint):
    if checkpoint is None:
        yield None
        return
    with checkpoint.as_directory() as directory:
        yield Path(directory)
