"""One phase of a sweep as one Tune experiment: the Tuner, its trainable, configs and callbacks.

Each phase (transfer_zh's `pretrain`, then `main`) is one Tune experiment under the sweep
directory: a grid over the trial grid's explicit variants. A phase that was interrupted is restored
with `Tuner.restore(..., resume_errored=True)`: finished trials stay finished, unfinished ones
continue from their last checkpoint. The sweep's life around the phases is `orchestrator.sweep`'s.
"""

from __future__ import annotations

import os
import signal
import threading

from ray import tune

from orchestrator import tracking
from orchestrator.grid import Phase, TrialGrid, Variant
from orchestrator.progress import CONSOLE, trial_error_text
from orchestrator.record import Resources, SweepRecord
from orchestrator.run_notes import variant_label
from workers import payload
from workers.kinds import FINETUNE, trial_kind
from workers.payload import TrackingTarget, TrainWorkers, TrialPayload, tune_space
from workers.vocabulary import Key, RunStatus, Tag, TrialState, trial_run_name

# Tune's trial status -> the MLflow status of the trial's run (anything else: it did not end)
RUN_STATUS = {"TERMINATED": RunStatus.FINISHED, "ERROR": RunStatus.FAILED}

# Set when a SIGINT (Ctrl-C) or SIGTERM (`kill`, SLURM's scancel) reached the driver during the last `run_phase`.
_INTERRUPTED = threading.Event()
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# parent run id -> the sweep's MLflow store as this driver reaches it. A resumed sweep's store may have
# moved (the tracking server of a new SLURM job): its restored trials and callbacks still hold the old address.
_STORE_URI: dict[str, str] = {}


def run_phase(record: SweepRecord, grid: TrialGrid, phase: Phase, quiet: bool = False):
    """Run (or restore and finish) one phase; returns Tune's ResultGrid (`was_interrupted()` says
    whether Ctrl-C stopped it). `quiet`: no tracebacks on the console."""
    # run_config adds Tune's JSON and CSV result loggers itself; this keeps Tune from adding TensorBoard's.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    CONSOLE.quiet = quiet  # also for a restored phase, whose callbacks Tune unpickles
    path = record.phase_path(phase.name)
    _STORE_URI[record.parent_run_id] = record.tracking_uri
    resources = Resources.from_dict(record.resources)
    trainable = make_trainable(resources)
    if tune.Tuner.can_restore(path):
        print(f"phase {phase.name}: restoring {path} (finished trials stay finished)", flush=True)
        tuner = tune.Tuner.restore(path, trainable, resume_errored=True)
    else:
        print(f"phase {phase.name}: {len(phase.variants)} trial(s)", flush=True)
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(record, phase, resources),
            tune_config=tune_config(grid, phase, resources),
            run_config=run_config(record, grid, phase, resources),
        )
    _INTERRUPTED.clear()
    handlers = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        return tuner.fit()
    finally:
        for sig, handler in handlers.items():  # Tune (and NoteInterrupt) leave their handlers installed after fit
            signal.signal(sig, handler)


def was_interrupted() -> bool:
    """Whether Ctrl-C (SIGINT) or SIGTERM stopped the last `run_phase`: Tune then stops every running trial and
    reports it TERMINATED, like a finished one, so its ResultGrid cannot tell."""
    return _INTERRUPTED.is_set()


class NoteInterrupt(tune.Callback):
    """Notes a SIGINT during `Tuner.fit`, then lets Tune's own handler stop the experiment; a SIGTERM takes
    the same path (Ray's driver would otherwise exit at once, leaving runs RUNNING and no resume line).

    Tune installs its SIGINT handler inside `fit`, before it sets up the callbacks: this wraps it. A second
    SIGTERM only notes again, so a SIGTERM from SLURM and one from the job script stop the sweep once."""

    def setup(self, **info):
        tune_handler = signal.getsignal(signal.SIGINT)
        if threading.current_thread() is not threading.main_thread() or not callable(tune_handler):
            return

        def note_then_stop(signum, frame):
            _INTERRUPTED.set()
            tune_handler(signum, frame)

        for sig in STOP_SIGNALS:
            signal.signal(sig, note_then_stop)


class StartupLine(tune.Callback):
    """Prints the driver's start-up timeline when the first trial starts (orchestrator/startup.py)."""

    def on_trial_start(self, iteration, trials, trial, **info):
        from orchestrator.startup import print_first_trial_line

        print_first_trial_line()


def check_phases_open(record: SweepRecord) -> None:
    """Each unfinished phase's Tune experiment can be opened where the record says (one line if not)."""
    for phase in TrialGrid.from_dict(record.grid).phases:
        if phase.name in record.phases_done:
            continue
        try:
            tune.Tuner.can_restore(record.phase_path(phase.name))
        except Exception as error:  # pyarrow's errors for a path or URI it cannot open
            raise SystemExit(
                f"cannot open the sweep directory {record.directory}: {tracking.first_line(error)}"
            ) from None


def make_trainable(resources: Resources):
    if resources.workers_per_trial > 1:
        from workers.finetune.distributed import train_emotion_distributed

        # The trial itself only coordinates; its TorchTrainer's workers hold the CPUs and GPUs.
        return tune.with_resources(train_emotion_distributed, {"cpu": 0.01})
    from workers.trial import train_emotion

    return tune.with_resources(train_emotion, {"cpu": resources.cpus_per_trial, "gpu": resources.gpus_per_trial})


def sweep_tags(record: SweepRecord) -> dict[str, str]:
    """Tags every trial run of the sweep carries."""
    return {
        Tag.SWEEP: record.sweep,
        Tag.DATA_HASH: record.data_hash,
        Tag.GIT_COMMIT: record.git_commit,
        Tag.TRIAL_KIND: record.grid.get("kind", FINETUNE),
        **tracking.source_tags(record.git_commit),
    }


def param_space(record: SweepRecord, phase: Phase, resources: Resources) -> dict:
    """The phase's trials as Tune's grid over their payloads (workers.payload)."""
    tracking = TrackingTarget(
        record.tracking_uri, record.experiment_id, record.parent_run_id, tuple(sorted(sweep_tags(record).items()))
    )
    distributed = None
    if resources.workers_per_trial > 1:
        distributed = TrainWorkers(
            num_workers=resources.workers_per_trial,
            cpus_per_worker=resources.cpus_per_trial,
            gpus_per_worker=resources.gpus_per_trial,
            storage_path=record.phase_path(f"{phase.name}-train"),
        )
    kind = record.grid.get("kind", FINETUNE)
    tuned = record.grid.get("tuned", ())
    mutable = tuple(resources.pbt_mutable) if resources.scheduler == "pbt" else ()
    trials = [
        TrialPayload(v.values, v.tags(), tracking, kind, distributed, label=variant_label(v, tuned), mutable=mutable)
        for v in phase.variants
    ]
    return tune_space(trials, tune.grid_search)


def tune_config(grid: TrialGrid, phase: Phase, resources: Resources):
    from orchestrator.schedulers import make_scheduler

    scheduler = make_scheduler(resources, phase.variants, max_epochs(phase.variants, grid.kind))
    return tune.TuneConfig(
        metric=grid.metric,
        mode=grid.mode,
        num_samples=1,
        scheduler=scheduler,
        max_concurrent_trials=resources.max_concurrent,
        reuse_actors=resources.reuse_actors,
        trial_name_creator=trial_name,
        trial_dirname_creator=trial_name,
    )


def run_config(record: SweepRecord, grid: TrialGrid, phase: Phase, resources: Resources):
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from orchestrator.progress import TrialProgress

    return tune.RunConfig(
        name=phase.name,
        storage_path=record.directory,
        # JSON and CSV results as Tune writes them by default, without TensorBoard files (MLflow has the curves).
        callbacks=[
            JsonLoggerCallback(),
            CSVLoggerCallback(),
            CloseChildRuns(record.tracking_uri, record.experiment_id, record.parent_run_id, sweep_tags(record)),
            TrialProgress(grid.metric, grid.mode, list(grid.tuned)),
            NoteInterrupt(),
            StartupLine(),
        ],
        failure_config=tune.FailureConfig(max_failures=resources.max_failures),
        # PBT copies a donor's latest checkpoint, maybe after the donor reported newer ones: keep a few more.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=4 if resources.scheduler == "pbt" else 2),
        verbose=0,
    )


def max_epochs(variants: tuple[Variant, ...], kind: str = FINETUNE) -> int:
    """ASHA's max_t: above any epoch a trial reports, so ASHA never stops a trial just for reaching
    the end of its schedule."""
    return max((v.epochs or _epochs_of(v, kind) for v in variants), default=0) + 1


def _epochs_of(variant: Variant, kind: str) -> int:
    """A variant's epochs from its config: the grid of a sweep recorded before variants carried them."""
    trials = trial_kind(kind)
    return trials.max_epochs(trials.config_from(variant.values))


def trial_name(trial) -> str:
    """Tune's name (and directory name) of a trial: scenario, config id, fold, trial id."""
    tags = TrialPayload.from_config(trial.config).tags
    parts = [tags.get(Tag.SCENARIO, "trial"), tags.get(Tag.CONFIG_ID, ""), tags.get(Tag.FOLD, "")]
    return "-".join(p for p in parts if p) + f"_{trial.trial_id}"


def base_model_of(results, record: SweepRecord) -> str:
    """The pretrain trial's model: its Tune checkpoint when local, else its MLflow `model/` artifact."""
    result = next(r for r in results if r.error is None)
    checkpoint = result.checkpoint
    if checkpoint is not None and "://" not in record.directory and os.path.isdir(checkpoint.path):
        return checkpoint.path
    trial_id = result.metrics.get(Key.TRIAL_ID) if result.metrics else None
    client = tracking.client_for(record.tracking_uri)
    run = tracking.find_child_run(client, record.experiment_id, record.parent_run_id, trial_id) if trial_id else None
    if run is None:
        raise RuntimeError("the pretrain trial left neither a local checkpoint nor an MLflow run")
    return f"runs:/{run.info.run_id}/{Key.MODEL_DIR}"


def init_ray(address: str | None) -> None:
    """Ray as the driver needs it: the background start joined (orchestrator.startup), or started now."""
    from orchestrator.startup import TIMELINE, connect_ray, wait_for_ray

    wait_for_ray()
    connect_ray(address)
    TIMELINE.mark("Ray ready")


def trial_statuses(results) -> dict[str, str]:
    """trial id -> MLflow status for every trial of a phase (finished, failed, or unfinished: KILLED)."""
    # ResultGrid counts its num_terminated/num_errors from these same Trial objects.
    return {t.trial_id: RUN_STATUS.get(t.status, RunStatus.KILLED) for t in results._experiment_analysis.trials}


class CloseChildRuns(tune.Callback):
    """Marks each trial's child run FINISHED or FAILED when Tune is done with the trial.

    Trials log their own runs; without this, a run whose trial was stopped or crashed stays RUNNING.
    A trial that failed before it could create its run gets one here, so every failure is visible.
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, tags: dict[str, str]):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.tags = tags

    def on_trial_add(self, iteration, trials, trial, **info):
        self._follow_store([trial])

    def on_step_begin(self, iteration, trials, **info):
        self._follow_store(trials)

    def _follow_store(self, trials) -> None:
        """Point this callback, and trials not yet started, at the store's address now (`_STORE_URI`): a restored
        experiment unpickles this callback and its trials' configs with the address the sweep started with."""
        uri = _STORE_URI.get(self.parent_run_id, self.tracking_uri)
        self.tracking_uri = uri
        for trial in trials:
            target = (trial.config or {}).get(payload.TRACKING)
            if isinstance(target, dict) and target.get("tracking_uri") != uri:
                target["tracking_uri"] = uri  # Tune copies trial.config when it starts (or resets) the trial's actor

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._close(trial, RunStatus.FINISHED, {}, tags_from_run=_stopped_early_tags)

    def on_trial_recover(self, iteration, trials, trial, **info):
        tags = self._run_tags(trial)
        if tags is not None:
            update = {
                Tag.RETRIES: str(int(tags.get(Tag.RETRIES, "0")) + 1),
                Tag.LAST_ERROR: _error_text(trial, "trial failed")[-2000:],
            }
            tracking.tag_trial_run(self.tracking_uri, self.experiment_id, self.parent_run_id, trial.trial_id, update)

    def on_trial_error(self, iteration, trials, trial, **info):
        error = _error_text(trial, str(getattr(trial, "error_file", "") or "trial failed"))
        self._close(trial, RunStatus.FAILED, {Tag.ERROR: error})

    def _run_tags(self, trial) -> dict[str, str] | None:
        return tracking.trial_run_tags(self.tracking_uri, self.experiment_id, self.parent_run_id, trial.trial_id)

    def _close(self, trial, status: str, tags: dict[str, str], tags_from_run=None) -> None:
        tracking.close_trial_run(
            self.tracking_uri,
            self.experiment_id,
            self.parent_run_id,
            trial.trial_id,
            status,
            create_tags={**self.tags, **_variant_tags(trial)},
            run_name=_run_name(trial),
            tags=tags,
            tags_from_run=tags_from_run,
        )


def _stopped_early_tags(run_tags: dict[str, str] | None) -> dict[str, str]:
    if run_tags is not None and run_tags.get(Tag.TRIAL_STATE) != TrialState.COMPLETED:
        # Ended by the scheduler (ASHA) before its final evaluation: no held-out metrics.
        return {Tag.STOPPED_EARLY: "true"}
    return {}


def _run_name(trial) -> str:
    """The trial's MLflow run name, as the trial itself names its run (workers.trial.train_emotion)."""
    label = TrialPayload.from_config(trial.config).label
    return trial_run_name(trial.trial_id, label) if label else str(trial)


def _variant_tags(trial) -> dict[str, str]:
    return TrialPayload.from_config(trial.config).tags


def _error_text(trial, fallback: str) -> str:
    return trial_error_text(trial, fallback)[-4000:]
