"""Run a planned sweep on Ray Tune, phase by phase, and resume one from its sweep directory.

Each phase (transfer_zh's `pretrain`, then `main`) is one Tune experiment under the sweep
directory: a grid over the plan's explicit variants. A phase that was interrupted is restored
with `Tuner.restore(..., resume_errored=True)`: finished trials stay finished, unfinished ones
continue from their last checkpoint. MLflow keeps one parent run per sweep (reopened on resume)
and one child run per trial (found again by its trial id).
"""

from __future__ import annotations

import math
import os

from mlflow.tracking import MlflowClient

from orchestrator.local_ray import start_local_ray
from orchestrator.plan import Phase, SweepPlan, Variant, fill_init_from
from orchestrator.state import Resources, SweepState
from workers.distributed import DISTRIBUTED_KEY
from workers.trial import TAGS_KEY, TRACKING_KEY, VALUES_KEY, VARIANT_KEY


class SweepInterrupted(Exception):
    """The driver was interrupted (Ctrl-C) before every trial ended."""


def run_sweep(state: SweepState, address: str | None = None, log=print) -> int:
    """Run (or finish) the sweep in `state`; returns the process exit code."""
    client = MlflowClient(state.tracking_uri)
    plan = SweepPlan.from_dict(state.plan)
    init_ray(address)
    if state.status != "running":
        state.status = "running"
        state.save()
    statuses: dict[str, str] = {}
    try:
        failed = 0
        for phase in plan.phases:
            if phase.name in state.phases_done:
                continue
            if phase.name != "pretrain" and state.base_model:
                phase = fill_init_from(phase, state.base_model)
            results = run_phase(state, plan, phase)
            statuses.update(trial_statuses(results))
            failed += results.num_errors
            # Fewer ended trials than planned: Tune stopped on Ctrl-C (it creates trials lazily, so
            # unstarted ones are not even in `results`).
            if results.num_terminated + results.num_errors < len(phase.variants):
                raise SweepInterrupted
            if phase.name == "pretrain":
                if results.num_errors:
                    return _stop_without_base(client, state, statuses, log)
                state.base_model = base_model_of(results, state, client)
                log(f"base model for the next phase: {state.base_model}")
            if not results.num_errors:  # a phase with failed trials is restored (and they retried) on --resume
                state.phases_done.append(phase.name)
            state.save()
    except (KeyboardInterrupt, SweepInterrupted):
        state.status = "interrupted"
        state.save()
        # Tune marks the trials it stops on Ctrl-C as terminated; only a completed tag says finished.
        closed = _close_children(client, state, {}, default="KILLED")
        client.set_terminated(state.parent_run_id, "KILLED")
        log(
            f"\ninterrupted: {closed.get('KILLED', 0)} unfinished trial run(s) marked KILLED in MLflow "
            f"(they continue on resume). Finish the sweep with:\n"
            f"    python -m orchestrator.sweep {state.sweep} --resume {state.directory}"
        )
        return 130
    except BaseException:
        state.status = "failed"
        state.save()
        _close_children(client, state, statuses, default="FAILED")
        client.set_terminated(state.parent_run_id, "FAILED")
        raise
    _close_children(client, state, statuses, default="KILLED", drop_orphans=True)
    state.status = "failed" if failed else "finished"
    state.save()
    return 0


def _stop_without_base(client: MlflowClient, state: SweepState, statuses: dict[str, str], log) -> int:
    state.status = "failed"
    state.save()
    _close_children(client, state, statuses, default="FAILED")
    client.set_terminated(state.parent_run_id, "FAILED")
    log(
        f"the pretrain trial (the base every other trial starts from) failed after its retries; its error is "
        f"on its MLflow run (tag 'error'). Fix the cause and run\n"
        f"    python -m orchestrator.sweep {state.sweep} --resume {state.directory}\n"
        f"or give a base with --init-from."
    )
    return 1


def run_phase(state: SweepState, plan: SweepPlan, phase: Phase):
    from ray import tune

    # run_config adds Tune's JSON and CSV result loggers itself; this keeps Tune from adding TensorBoard's.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    path = state.phase_path(phase.name)
    resources = Resources.from_dict(state.resources)
    trainable = make_trainable(resources)
    if tune.Tuner.can_restore(path):
        print(f"phase {phase.name}: restoring {path} (finished trials stay finished)", flush=True)
        tuner = tune.Tuner.restore(path, trainable, resume_errored=True)
    else:
        print(f"phase {phase.name}: {len(phase.variants)} trial(s)", flush=True)
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(state, phase, resources),
            tune_config=tune_config(plan, phase, resources),
            run_config=run_config(state, plan, phase, resources),
        )
    return tuner.fit()


def make_trainable(resources: Resources):
    from ray import tune

    if resources.workers_per_trial > 1:
        from workers.distributed import train_emotion_distributed

        # The trial itself only coordinates; its TorchTrainer's workers hold the CPUs and GPUs.
        return tune.with_resources(train_emotion_distributed, {"cpu": 0.01})
    from workers.trial import train_emotion

    return tune.with_resources(train_emotion, {"cpu": resources.cpus_per_trial, "gpu": resources.gpus_per_trial})


def param_space(state: SweepState, phase: Phase, resources: Resources) -> dict:
    from ray import tune

    sweep_tags = {"sweep": state.sweep, "data_hash": state.data_hash, "git_commit": state.git_commit}
    space = {
        VARIANT_KEY: tune.grid_search([{VALUES_KEY: v.values, TAGS_KEY: v.tags()} for v in phase.variants]),
        TRACKING_KEY: {
            "tracking_uri": state.tracking_uri,
            "experiment_id": state.experiment_id,
            "parent_run_id": state.parent_run_id,
            "tags": sorted(sweep_tags.items()),
        },
    }
    if resources.workers_per_trial > 1:
        space[DISTRIBUTED_KEY] = {
            "num_workers": resources.workers_per_trial,
            "cpus_per_worker": resources.cpus_per_trial,
            "gpus_per_worker": resources.gpus_per_trial,
            "storage_path": state.phase_path(f"{phase.name}-train"),
        }
    return space


def tune_config(plan: SweepPlan, phase: Phase, resources: Resources):
    from ray import tune

    scheduler = None
    if resources.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        # `epoch` is reported by the recipe itself: Tune's iteration counter restarts after a restore.
        scheduler = ASHAScheduler(
            time_attr="epoch", max_t=max_epochs(phase.variants), grace_period=1, reduction_factor=2
        )
    return tune.TuneConfig(
        metric=plan.metric,
        mode=plan.mode,
        num_samples=1,
        scheduler=scheduler,
        max_concurrent_trials=resources.max_concurrent,
        reuse_actors=resources.reuse_actors,
        trial_name_creator=trial_name,
        trial_dirname_creator=trial_dirname,
    )


def run_config(state: SweepState, plan: SweepPlan, phase: Phase, resources: Resources):
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from orchestrator.progress import TrialProgress
    from orchestrator.tracking import CloseChildRuns

    sweep_tags = {"sweep": state.sweep, "data_hash": state.data_hash, "git_commit": state.git_commit}
    return tune.RunConfig(
        name=phase.name,
        storage_path=state.directory,
        # JSON and CSV results as Tune writes them by default, without TensorBoard files (MLflow has the curves).
        callbacks=[
            JsonLoggerCallback(),
            CSVLoggerCallback(),
            CloseChildRuns(state.tracking_uri, state.experiment_id, state.parent_run_id, sweep_tags),
            TrialProgress(plan.metric, plan.mode, list(plan.tuned)),
        ],
        failure_config=tune.FailureConfig(max_failures=resources.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        verbose=0,
    )


def max_epochs(variants: tuple[Variant, ...]) -> int:
    """ASHA's max_t: above any epoch a trial reports (the recipe counts a stage's partial last pass as
    an epoch), so ASHA never stops a trial just for reaching the end of its schedule."""
    from workers.config import TrialConfig

    lengths = [sum(math.ceil(s.epochs) for s in TrialConfig.from_dict(v.values).stage_list()) for v in variants]
    return max(lengths, default=0) + 1


def trial_name(trial) -> str:
    tags = ((trial.config or {}).get(VARIANT_KEY) or {}).get(TAGS_KEY, {})
    parts = [tags.get("scenario", "trial"), tags.get("config_id", ""), tags.get("fold", "")]
    return "-".join(p for p in parts if p) + f"_{trial.trial_id}"


def trial_dirname(trial) -> str:
    return trial_name(trial)


def base_model_of(results, state: SweepState, client: MlflowClient) -> str:
    """The pretrain trial's model: its Tune checkpoint when local, else its MLflow `model/` artifact."""
    from orchestrator.tracking import find_child_run

    result = next(r for r in results if r.error is None)
    checkpoint = result.checkpoint
    if checkpoint is not None and "://" not in state.directory and os.path.isdir(checkpoint.path):
        return checkpoint.path
    trial_id = result.metrics.get("trial_id") if result.metrics else None
    run = find_child_run(client, state.experiment_id, state.parent_run_id, trial_id) if trial_id else None
    if run is None:
        raise RuntimeError("the pretrain trial left neither a local checkpoint nor an MLflow run")
    return f"runs:/{run.info.run_id}/model"


def init_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    if address is None:  # a local Ray: loopback only, and what a killed predecessor left is stopped
        start_local_ray(include_dashboard=False, log_to_driver=False, configure_logging=True, logging_level="WARNING")
        return
    ray.init(
        address=address, include_dashboard=False, log_to_driver=False, configure_logging=True, logging_level="WARNING"
    )


def _close_children(
    client: MlflowClient, state: SweepState, statuses: dict[str, str], default: str, drop_orphans: bool = False
) -> dict[str, int]:
    """No child run stays RUNNING: trials Tune reported on get their status, others `default`.

    With `drop_orphans` (a completed sweep), a RUNNING run whose trial Tune never recorded (the
    driver died before its first state save, so the trial ran again under a new id) is marked
    KILLED and soft-deleted, leaving one run per trial.
    """
    from orchestrator.tracking import child_runs, close_open_children

    if drop_orphans:
        for run in child_runs(client, state.experiment_id, state.parent_run_id):
            if run.info.status == "RUNNING" and run.data.tags.get("trial_id") not in statuses:
                client.set_tag(
                    run.info.run_id, "orphan", "trial unknown to the resumed sweep; it ran again under a new id"
                )
                client.set_terminated(run.info.run_id, "KILLED")
                client.delete_run(run.info.run_id)
    return close_open_children(client, state.experiment_id, state.parent_run_id, statuses, default)


def trial_statuses(results) -> dict[str, str]:
    """trial id -> MLflow status for every trial of a phase (finished, failed, or unfinished: KILLED)."""
    mapping = {"TERMINATED": "FINISHED", "ERROR": "FAILED"}
    # ResultGrid counts its num_terminated/num_errors from these same Trial objects.
    return {t.trial_id: mapping.get(t.status, "KILLED") for t in results._experiment_analysis.trials}
