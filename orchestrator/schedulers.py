"""How Tune schedules a phase's trials: fifo (every trial to its end), ASHA, or population-based training.

    --scheduler fifo    every trial runs its whole schedule
    --scheduler asha    weak trials stop early, by epoch (ASHA)
    --scheduler pbt     population-based training (Ray Tune's PopulationBasedTraining): every
                        `--perturbation-interval` epochs a trial in the bottom quarter (by the sweep's
                        metric) takes over the checkpoint of one in the top quarter (its best model, with
                        the train state and optimizer, workers/finetune/checkpoint.py) and the top trial's
                        `--pbt-mutate` values, perturbed (x0.8 or x1.2, or resampled), then trains on.

A trial stays one MLflow run under PBT: it keeps its own identity (tags, run name, the values PBT does
not mutate) and only takes over the weights and the mutated values. MLflow refuses a param's new value
(Ray issues 20473, 30649), so a mutable key stays a param with its first value, and its history is the
metric `pbt/<key>` (one point per start: step 0, then the step each exploit resumes at; workers/core/
param_history.py); each exploit is a tag `pbt/<n>` on the trial's run (JSON: epoch, the trial it
copied, every mutated key's old and new value), written by the driver when it decides.
"""

from __future__ import annotations

import argparse
import copy
import json

from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining

from workers import payload as tune_payload
from workers.payload import TrialPayload
from workers.vocabulary import Key, Tag

SCHEDULERS = ("fifo", "asha", "pbt")


def add_scheduler_flags(how) -> None:
    """--scheduler and PBT's flags, retries, and worker reuse (the driver's "resources and scheduling" group)."""
    how.add_argument(
        "--scheduler",
        choices=SCHEDULERS,
        default=None,
        help="fifo: every trial runs to the end; asha: stop weak trials early, by epoch; pbt: population-based "
        "training, weak trials continue from strong ones' checkpoints with perturbed values (default fifo)",
    )
    how.add_argument(
        "--pbt-mutate",
        dest="pbt_mutable",  # the Resources field
        type=lambda text: tuple(k.strip() for k in text.split(",") if k.strip()),
        default=None,
        metavar="KEY[,KEY]",
        help="pbt: the config keys it perturbs (default learning_rate)",
    )
    how.add_argument(
        "--perturbation-interval",
        type=int,
        default=None,
        help="pbt: epochs between a trial's exploit/explore decisions (default 1)",
    )
    how.add_argument(
        "--max-failures",
        type=int,
        default=None,
        help="retries of a failing trial (from its last checkpoint) before it is marked FAILED (default 2)",
    )
    how.add_argument(
        "--reuse-actors",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run consecutive trials in the same worker process; a fresh one pays ~4 s of "
        "torch/transformers imports (default on)",
    )


def make_scheduler(resources, variants, max_epochs: int):
    """Tune's scheduler for `resources.scheduler` over the phase's `variants` (None: fifo)."""
    if resources.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        # `epoch` is reported by the recipe itself: Tune's iteration counter restarts after a restore.
        return ASHAScheduler(time_attr=Key.EPOCH, max_t=max_epochs, grace_period=1, reduction_factor=2)
    if resources.scheduler == "pbt":
        check_population(variants, tuple(resources.pbt_mutable))
        return TrackedPBT(
            tuple(resources.pbt_mutable),
            time_attr=Key.EPOCH,
            perturbation_interval=max(1, int(resources.perturbation_interval)),
            hyperparam_mutations={
                tune_payload.VARIANT: {tune_payload.VALUES: mutations(variants, tuple(resources.pbt_mutable))}
            },
            require_attrs=False,  # the final report (held-out sets) has no epoch of its own to decide on
        )
    return None


def check_scheduler(resources: dict, grid) -> None:
    """Before the parent run and any trial: a PBT sweep's phases are populations PBT can copy within."""
    if resources.get("scheduler") != "pbt":
        return
    for phase in grid.phases:
        try:
            check_population(phase.variants, tuple(resources["pbt_mutable"]))
        except ValueError as error:
            raise SystemExit(str(error)) from None


def check_population(variants, mutable: tuple[str, ...]) -> None:
    """PBT copies a trial's checkpoint into another: their trials may differ only in the mutable keys (a
    checkpoint of another schedule, start or fold does not fit: its stage, optimizer and speakers differ)."""
    fixed = [{k: v for k, v in variant.values.items() if k not in mutable} for variant in variants]
    differing = sorted(
        {k for values in fixed[1:] for k in values.keys() | fixed[0].keys() if values.get(k) != fixed[0].get(k)}
    )
    if differing:
        raise ValueError(
            f"--scheduler pbt: the trials differ in {', '.join(differing)}, not only in {', '.join(mutable)}; "
            f"fix those (e.g. --set {differing[0]}=...) or add them to --pbt-mutate"
        )


def mutations(variants, keys: tuple[str, ...]) -> dict:
    """key -> what PBT resamples it from: log-uniform over [min/4, max*4] of the sweep's values for a
    positive number (a learning rate), else the values the sweep names."""
    from ray import tune

    found = {}
    for key in keys:
        values = [v.values[key] for v in variants if key in v.values]
        if not values:
            raise ValueError(f"--pbt-mutate {key}: no trial of this phase sets {key!r} (give it: --set {key}=VALUE)")
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values)
        if numbers and all(isinstance(v, float) for v in values):
            found[key] = tune.loguniform(min(values) / 4, max(values) * 4)
        else:
            found[key] = sorted(set(values), key=str)
    return found


class TrackedPBT(PopulationBasedTraining):
    """Ray Tune's PBT where an exploiting trial keeps its identity and its exploit is recorded on its MLflow run."""

    def __init__(self, mutable: tuple[str, ...], **kwargs):
        super().__init__(**kwargs)
        self.mutable = mutable
        self.events: dict[str, int] = {}  # trial id -> exploits recorded

    def on_trial_result(self, tune_controller, trial, result):
        if Key.TRIAL_SECONDS in result:  # the final report: the run is completed, a restart would only replay it
            return self.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def worth_copying(self, donor_trial, trial) -> bool:
        """Whether `trial` should continue from `donor_trial`'s checkpoint: the donor scored strictly better (PBT's
        scores: higher is better in either mode), and is not waiting paused at an earlier epoch than the
        trial's own (a running donor a decision behind is ordinary asynchronous PBT).

        Tune's PBT exploits whatever sits in the bottom quantile, from a donor's last checkpoint wherever it
        is. With more trials than CPUs most donors wait paused, an epoch or more behind; a trial that copies
        one goes back to that epoch, and Tune runs the trials with the least progress first, so the same
        trials were sent back again and again while the donors never ran (8 trials on 2 CPUs on the demo
        corpus, where whole populations also tie at 6 of 23 validation clips: 159 exploits in 9 minutes, no
        trial past epoch 2). Copying a donor no better, or behind, gains nothing and loses progress."""
        waiting = donor_trial.status in (Trial.PAUSED, Trial.PENDING)
        donor, own = self._trial_state[donor_trial], self._trial_state[trial]
        if donor.last_score is None or (waiting and donor.last_train_time < own.last_train_time):
            return False
        return own.last_score is None or donor.last_score > own.last_score

    def _get_new_config(self, trial, trial_to_clone):
        """The exploiting trial's own config, with the donor's mutable values as PBT explored them."""
        explored, operations = super()._get_new_config(trial, trial_to_clone)
        config = copy.deepcopy(trial.config)
        values = config[tune_payload.VARIANT][tune_payload.VALUES]
        for key in self.mutable:
            values[key] = explored[tune_payload.VARIANT][tune_payload.VALUES][key]
        return config, operations

    def _exploit(self, tune_controller, trial, trial_to_clone):
        if not self.worth_copying(trial_to_clone, trial):
            return
        before = {k: TrialPayload.from_config(trial.config).values.get(k) for k in self.mutable}
        epoch = self._trial_state[trial_to_clone].last_train_time
        super()._exploit(tune_controller, trial, trial_to_clone)
        after = {k: TrialPayload.from_config(trial.config).values.get(k) for k in self.mutable}
        self.events[trial.trial_id] = number = self.events.get(trial.trial_id, 0) + 1
        event = {
            "epoch": epoch,
            "from_trial": trial_to_clone.trial_id,
            "values": {k: [before[k], after[k]] for k in after},
        }
        changes = ", ".join(f"{k} {_short(before[k])} -> {_short(after[k])}" for k in after)
        print(
            f"[pbt] {trial.trial_id} continues from {trial_to_clone.trial_id} at epoch {epoch}: {changes}", flush=True
        )
        record_event(trial, number, event)


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def record_event(trial, number: int, event: dict) -> None:
    """The exploit as tag `pbt/<number>` on the trial's run; a store that fails costs a line, not the sweep."""
    from orchestrator import tracking

    target = TrialPayload.from_config(trial.config).tracking
    if target is None:
        return
    try:
        tracking.tag_trial_run(
            target.tracking_uri,
            target.experiment_id,
            target.parent_run_id,
            trial.trial_id,
            {Tag.pbt_event(number): json.dumps(event)},
        )
    except Exception as error:  # the run is the trial's; the sweep goes on
        print(f"[pbt] could not record exploit {number} of {trial.trial_id}: {tracking.first_line(error)}", flush=True)
