"""What the driver hands a trial through Tune: the one definition of a trial's Tune config.

    {"variant": {"values": config values, "tags": MLflow tags},  one per trial (Tune's grid over them)
     "tracking": where its MLflow run goes (TrackingTarget),      the same for every trial of a phase
     "kind": a workers.kinds name,                                 the same
     "distributed": data-parallel settings,                        only with --workers-per-trial > 1
     "mutable": config keys PBT perturbs}                          only with --scheduler pbt

The driver builds it (`tune_space`, orchestrator.tuner); the trial (workers.trial) and the driver's
callbacks (trial names, progress lines, closing a trial's run) read it back with
`TrialPayload.from_config`. Nothing else names these keys. Import-light: plain dataclasses, no kind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

VARIANT = "variant"
VALUES = "values"
TAGS = "tags"
LABEL = "label"  # in the variant: what the trial varies, its scenario and fold (its MLflow run name)
TRACKING = "tracking"
KIND = "kind"
DISTRIBUTED = "distributed"
MUTABLE = "mutable"  # config keys a scheduler (PBT) may change during the trial: logged as metrics, not params
# Set inside a data-parallel trial for its workers, which have no Tune context to ask.
TRIAL_ID = "trial_id"
TRIAL_NAME = "trial_name"


@dataclass(frozen=True)
class TrackingTarget:
    """Where the driver wants a trial's child run: the store, the experiment, the sweep's parent run, and
    the tags every trial run of the sweep carries."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    tags: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "tags": [list(t) for t in self.tags]}

    @classmethod
    def from_dict(cls, values: dict) -> TrackingTarget:
        return cls(
            values["tracking_uri"],
            values["experiment_id"],
            values["parent_run_id"],
            tuple(tuple(t) for t in values.get("tags", ())),
        )


@dataclass(frozen=True)
class TrainWorkers:
    """One trial on several processes (orchestrator --workers-per-trial > 1): a TorchTrainer's workers."""

    num_workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    storage_path: str  # the Train run's checkpoints (a retried trial continues from them)

    @classmethod
    def from_dict(cls, values: dict) -> TrainWorkers:
        return cls(**values)


@dataclass(frozen=True)
class TrialPayload:
    """One trial's Tune config, typed."""

    values: dict  # its kind's config values, canonical keys (the driver checked them at the door)
    tags: dict[str, str] = field(default_factory=dict)  # its own MLflow tags (scenario, config id, fold, ...)
    tracking: TrackingTarget | None = None  # None: no MLflow run (tests, benchmarks)
    kind: str = ""  # a workers.kinds name; "": fine-tuning
    distributed: TrainWorkers | None = None
    trial_id: str = ""  # set by a data-parallel trial for its workers
    trial_name: str = ""
    label: str = ""  # what it varies, its scenario and fold: its MLflow run name (vocabulary.trial_run_name)
    mutable: tuple[str, ...] = ()  # keys PBT may change mid-trial (orchestrator/schedulers.py)

    def to_config(self) -> dict:
        return {**_shared(self), VARIANT: _variant(self)}

    @classmethod
    def from_config(cls, config: dict | None) -> TrialPayload:
        """A Tune config as `tune_space` built it (Tune resolved the variant), or flat config values beside
        optional tracking, tags and kind (a hand-made config: tests, benchmarks)."""
        config = config or {}
        variant = config.get(VARIANT)
        if variant is None:
            values = {k: v for k, v in config.items() if k not in (TRACKING, TAGS, KIND)}
            tags, label = config.get(TAGS, {}), ""
        else:
            values, tags, label = dict(variant.get(VALUES, {})), variant.get(TAGS, {}), variant.get(LABEL, "")
        tracking, distributed = config.get(TRACKING), config.get(DISTRIBUTED)
        return cls(
            values=values,
            tags={k: str(v) for k, v in tags.items()},
            label=label,
            tracking=TrackingTarget.from_dict(tracking) if tracking else None,
            kind=config.get(KIND) or "",
            distributed=TrainWorkers.from_dict(distributed) if distributed else None,
            trial_id=config.get(TRIAL_ID, ""),
            trial_name=config.get(TRIAL_NAME, ""),
            mutable=tuple(config.get(MUTABLE, ())),
        )


def tune_space(trials: Sequence[TrialPayload], grid_search: Callable[[list], object]) -> dict:
    """The Tune param space of a phase: what its trials share, and `grid_search` (Tune's) over their
    variants. The trials must share tracking, kind and data-parallel settings."""
    shared = [_shared(t) for t in trials]
    if any(s != shared[0] for s in shared[1:]):
        raise ValueError("the trials of one Tune experiment share tracking, kind and data-parallel settings")
    variants = [_variant(t) for t in trials]
    return {**(shared[0] if shared else {}), VARIANT: grid_search(variants)}


def _variant(payload: TrialPayload) -> dict:
    variant = {VALUES: payload.values, TAGS: payload.tags}
    if payload.label:
        variant[LABEL] = payload.label
    return variant


def _shared(payload: TrialPayload) -> dict:
    config: dict = {KIND: payload.kind}
    if payload.tracking is not None:
        config[TRACKING] = payload.tracking.to_dict()
    if payload.distributed is not None:
        config[DISTRIBUTED] = dataclasses.asdict(payload.distributed)
    if payload.trial_id:
        config[TRIAL_ID], config[TRIAL_NAME] = payload.trial_id, payload.trial_name
    if payload.mutable:
        config[MUTABLE] = list(payload.mutable)
    return config
