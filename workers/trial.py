"""The Tune function trainable: turns a Tune config into a typed TrialConfig and runs the recipe.

Kept import-light (torch loads inside the function) so the driver can import it cheaply.

A trial's Tune config is `{VARIANT_KEY: {"values": config values, "tags": MLflow tags, ...},
TRACKING_KEY: where its MLflow run goes, KIND_KEY: what it runs}` (flat TrialConfig values also
work). The kind (workers.kinds: fine-tuning, or a baseline) picks the typed config and the run
function; without one, the fine-tuning recipe. On top of that, the trial
- finds or creates its MLflow child run by trial id (a restored trial reuses its run),
- records where and when it ran (tags Tag.CUDA_VISIBLE_DEVICES, HOST, PID, STARTED_AT, ENDED_AT),
- numbers its attempts, in tags only (the UI's metric views show no counters or timestamps): Tag.ATTEMPT,
  and Tag.attempt_started(n) per attempt. A retry logs the steps between its checkpoint and the crash
  again; an entry belongs to the last attempt that started at or before its timestamp,
- never trains twice: a run already marked completed replays its final metrics to Tune,
- continues from Tune's checkpoint (`run_trial(..., resume_dir=...)`),
- fetches an `init_from` given as an MLflow artifact URI (`runs:/<run id>/model`) once per node.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from workers.kinds import FINETUNE
from workers.kinds import trial_kind as kind_named
from workers.vocabulary import Key, Tag, TrialState, trial_run_name

# Config keys that are about where results go, not about the recipe.
TRACKING_KEY = "tracking"
TAGS_KEY = "tags"
VARIANT_KEY = "variant"
VALUES_KEY = "values"
KIND_KEY = "kind"  # a workers.kinds name; absent: fine-tuning
LABEL_KEY = "label"  # in the variant: what the trial varies, its scenario and fold (its MLflow run name)


def train_emotion(config: dict) -> None:
    from ray import tune

    from workers.core.reporting import TuneReporter

    context = tune.get_context()
    values, tags = trial_values(config)
    tracking = config.get(TRACKING_KEY)
    label = (config.get(VARIANT_KEY) or {}).get(LABEL_KEY, "")
    run_name = trial_run_name(context.get_trial_id(), label) if label else context.get_trial_name()
    logger = open_logger(tracking, context.get_trial_id(), run_name, tags, record=True)
    reporter = TuneReporter()
    checkpoint = tune.get_checkpoint()
    if replay_if_completed(logger, reporter, checkpoint):
        return
    run_recorded(
        values,
        logger,
        reporter,
        checkpoint,
        tracking_uri=(config.get(TRACKING_KEY) or {}).get("tracking_uri"),
        kind=config.get(KIND_KEY) or FINETUNE,
    )


def run_recorded(
    values: dict, logger, reporter, checkpoint=None, tracking_uri: str | None = None, kind: str = FINETUNE, **hooks
) -> dict:
    """Run the trial of `kind` on `values`, with the attempt and its outcome recorded on the run."""
    trial_kind = kind_named(kind)
    cfg = trial_kind.config_from(values)
    record_attempt(logger)
    try:
        if getattr(cfg, "init_from", ""):
            cfg = _replace(cfg, init_from=local_model_dir(cfg.init_from, tracking_uri))
        run = trial_kind.run_function()
        reporter = MarkCompleted(reporter, logger, tuple(cfg.eval_sets))
        if not trial_kind.resumable:
            return run(cfg, logger, reporter, **hooks)
        with _checkpoint_dir(checkpoint) as resume_dir:
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
        self.final_keys = [Key.accuracy(name) for name in eval_sets]

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None = None) -> None:
        if all(key in metrics for key in self.final_keys):
            self.logger.set_tags({Tag.ENDED_AT: f"{time.time():.3f}", Tag.TRIAL_STATE: TrialState.COMPLETED})
        self.reporter.report(metrics, checkpoint_dir=checkpoint_dir)


def trial_values(config: dict) -> tuple[dict, dict[str, str]]:
    """(TrialConfig values, per-trial MLflow tags) from a Tune config, nested or flat."""
    variant = config.get(VARIANT_KEY)
    if variant is None:
        values = {k: v for k, v in config.items() if k not in (TRACKING_KEY, TAGS_KEY, KIND_KEY)}
        return values, {k: str(v) for k, v in config.get(TAGS_KEY, {}).items()}
    return dict(variant.get(VALUES_KEY, {})), {k: str(v) for k, v in variant.get(TAGS_KEY, {}).items()}


def open_logger(tracking: dict | None, trial_id: str, trial_name: str, tags: dict[str, str], record: bool = False):
    """The trial's run, found or created, with the trial's tags current (a reused run: restore, retry).

    `record`: this attempt's record (`attempt_record`) rides with the same round trips (a new run: one
    search and one create before training starts); otherwise `run_recorded` records it.
    """
    import dataclasses

    from workers.core.tracking import MlflowRunLogger, NullLogger, TrackingTarget

    if not tracking:
        return NullLogger()
    target = TrackingTarget.from_dict(tracking)
    target = dataclasses.replace(target, tags=target.tags + tuple(tags.items()))
    if not record:
        return MlflowRunLogger.for_trial(target, trial_id, run_name=trial_name)
    return MlflowRunLogger.for_trial(target, trial_id, trial_name, attempt_record=attempt_record)


def replay_if_completed(logger, reporter, checkpoint) -> bool:
    """A trial that already completed (its driver died before Tune saw it) reports again, trains not."""
    completed = logger.completed_metrics()
    if completed is None:
        return False
    metrics = {k: v for k, v in completed.items() if not k.startswith(Key.CURVE_PREFIX)}
    with _checkpoint_dir(checkpoint) as directory:
        reporter.report(metrics, checkpoint_dir=directory)
    return True


def attempt_record(attempt: int) -> tuple[dict[str, str], dict[str, float]]:
    """(tags, metrics) that record attempt number `attempt` (1 for the first): where and when it runs.

    Tags only (metrics: none): a timestamp or a counter logged as a metric becomes what the UI's
    Models tab and charts show first."""
    now = time.time()
    tags = {
        Tag.ATTEMPT: str(attempt),
        Tag.STARTED_AT: f"{now:.3f}",
        Tag.attempt_started(attempt): f"{now:.3f}",
        Tag.CUDA_VISIBLE_DEVICES: os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        Tag.HOST: os.uname().nodename,
        Tag.RAY_NODE_ID: ray_node_id(),
        Tag.PID: str(os.getpid()),
        Tag.TRIAL_STATE: TrialState.RUNNING,
    }
    return tags, {}


def ray_node_id() -> str:
    """The Ray node this process runs on ('' outside Ray): hosts share a name when nodes share a machine."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


def record_attempt(logger) -> int:
    """Record this attempt on the run, unless opening the run already did (`open_logger(record=True)`);
    returns its number."""
    if getattr(logger, "attempt_recorded", False):
        return logger.attempt
    attempt = int(logger.run_tags().get(Tag.ATTEMPT, "0")) + 1
    tags, _ = attempt_record(attempt)
    logger.set_tags(tags)
    logger.attempt_recorded = True
    logger.attempt = attempt
    return attempt


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


def _replace(cfg, **changes):
    import dataclasses

    return dataclasses.replace(cfg, **changes)
