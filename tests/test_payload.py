"""The Tune payload: what the driver builds for a phase is what each trial and the driver's callbacks read back."""

import pytest

from workers.payload import TrackingTarget, TrainWorkers, TrialPayload, tune_space
from workers.vocabulary import Tag


def grid_search(values: list) -> dict:
    return {"grid_search": values}  # Tune's own shape for a grid axis


def resolved(space: dict, index: int) -> dict:
    """One trial's config as Tune resolves the grid: the index-th variant in place of the axis."""
    variant = space["variant"]["grid_search"][index]
    return {**space, "variant": variant}


def test_each_trial_reads_back_the_payload_the_driver_built_for_it():
    tracking = TrackingTarget("sqlite:///m.db", "1", "parent", ((Tag.SWEEP, "smoke"),))
    parallel = TrainWorkers(num_workers=2, cpus_per_worker=1.0, gpus_per_worker=0.5, storage_path="/s/main-train")
    trials = [
        TrialPayload({"learning_rate": rate}, {Tag.SCENARIO: "smoke"}, tracking, "finetune", parallel)
        for rate in (1e-3, 2e-3)
    ]
    space = tune_space(trials, grid_search)
    for index, trial in enumerate(trials):
        assert TrialPayload.from_config(resolved(space, index)) == trial
    assert TrialPayload.from_config(trials[0].to_config()) == trials[0]


def test_trials_of_one_experiment_share_where_they_log_and_what_they_run():
    tracking = TrackingTarget("sqlite:///m.db", "1", "parent")
    with pytest.raises(ValueError, match="share"):
        tune_space([TrialPayload({}, tracking=tracking, kind="text"), TrialPayload({}, tracking=tracking)], grid_search)


def test_flat_config_values_are_a_payload_too():
    payload = TrialPayload.from_config({"learning_rate": 1e-3, "tags": {Tag.FOLD: 1}, "kind": "text"})
    assert payload == TrialPayload({"learning_rate": 1e-3}, {Tag.FOLD: "1"}, None, "text")
