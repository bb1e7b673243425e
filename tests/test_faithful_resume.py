"""A resumed trial ends where the uninterrupted one ends: same final held-out metrics, equal, not close.

A checkpoint carries everything the path depends on (workers/finetune/resume_state.py): the best
weights, AdamW's state inside a stage, the adaptive lr's memory, the position in the epoch's batch
plan and every random generator (dropout, layerdrop and SpecAugment stay on here, so each matters).
"""

import json
import random
import signal
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from ray import tune

from workers.core.reporting import ListReporter
from workers.core.tracking import NullLogger
from workers.finetune.checkpoint import TRAIN_STATE_FILE
from workers.finetune.config import TrialConfig
from workers.finetune.recipe import run_trial
from workers.finetune.resume_state import (
    OPTIMIZER_FILE,
    capture_rng,
    clone_optimizer_state,
    load_optimizer_state,
    restore_rng,
    save_optimizer_state,
)

CPU = torch.device("cpu")


def resume_config(demo_dir, tmp_path, **overrides) -> TrialConfig:
    """One all_but_cnn stage of 3 epochs (12 steps each), an evaluation every 4 steps; regularisation on."""
    values = dict(
        data_dir=str(demo_dir),
        train_speakers=("0011", "0012"),
        eval_sets={"test_en": ("0015",)},
        val_fraction=0.25,
        stages=({"trainable": "all_but_cnn", "epochs": 3, "learning_rate": 2e-3, "batch_size": 4},),
        eval_every_steps=4,
        prefetch_batches=0,
        mask_time_prob=0.2,
        feature_cache_dir=str(tmp_path / "features"),
        seed=7,
    )
    values.update(overrides)
    return TrialConfig(**values)


def held_out(metrics: dict) -> dict:
    """The final metrics a trial's path decides: every evaluation set's, the step and epoch (no timings)."""
    return {k: v for k, v in metrics.items() if "/" in k or k in ("step", "epoch")}


@pytest.mark.slow
def test_a_trial_resumed_mid_stage_ends_exactly_where_the_uninterrupted_one_ends(demo_dir, tmp_path):
    cfg = resume_config(demo_dir, tmp_path)
    reporter = ListReporter(checkpoint_root=tmp_path / "tune")
    uninterrupted = run_trial(cfg, NullLogger(), reporter, device=CPU)
    checkpoints = [c for c in reporter.checkpoints[:-1] if c is not None]
    first = checkpoints[0]
    saved = json.loads((first / TRAIN_STATE_FILE).read_text())
    assert saved["stage_index"] == 0 and saved["step"] < uninterrupted["step"], "the checkpoint is mid-stage"
    # The final model is a later best: its path runs through the steps after the checkpoint.
    assert uninterrupted["val/loss"] < saved["best_val_loss"]
    assert (first / OPTIMIZER_FILE).exists()

    torch.manual_seed(12345)  # a fresh process's generators are wherever they are: the checkpoint's must win
    resumed = run_trial(cfg, NullLogger(), ListReporter(), device=CPU, resume_dir=first)
    assert held_out(resumed) == held_out(uninterrupted)


def draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_every_generator_continues_from_its_saved_state_through_json():
    saved = json.loads(json.dumps(capture_rng()))
    expected = draws()
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    restore_rng(saved)
    assert draws() == expected


def test_the_saved_optimizer_state_is_the_one_at_saving_time(tmp_path):
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([weight], lr=0.1)
    weight.grad = torch.tensor([1.0, -2.0, 3.0])
    optimizer.step()
    saved = clone_optimizer_state(optimizer)
    optimizer.step()  # later steps leave the kept copy alone
    save_optimizer_state(tmp_path, saved)
    restored = load_optimizer_state(tmp_path)
    assert restored["state"][0]["step"] == 1
    assert torch.equal(restored["state"][0]["exp_avg"], torch.tensor([1.0, -2.0, 3.0]) * 0.1)
    assert load_optimizer_state(tmp_path / "elsewhere") is None


class KillWorkerAfterFirstCheckpoint(tune.Callback):
    """SIGKILLs the trial's Ray worker process once Tune has its first checkpoint; notes what it did in files
    (Tune may copy callbacks, so no state on the object is read back)."""

    def __init__(self, notes: Path):
        self.notes = notes

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        if (self.notes / "killed").exists():
            return
        for process in psutil.Process().children(recursive=True):
            try:
                title = " ".join(process.cmdline())
            except psutil.Error:
                continue
            if "ImplicitFunc" in title or "train_emotion" in title:
                (self.notes / "killed").write_text(f"{title} ({process.pid})")
                process.send_signal(signal.SIGKILL)
                return

    def on_trial_recover(self, iteration, trials, trial, **info):
        (self.notes / "recovered").write_text(trial.trial_id)


@pytest.mark.slow
def test_a_trial_whose_worker_is_killed_after_its_first_checkpoint_ends_as_if_never_killed(
    demo_dir, tmp_path, local_ray
):
    from workers.trial import train_emotion

    cfg = resume_config(demo_dir, tmp_path)
    uninterrupted = run_trial(cfg, NullLogger(), ListReporter(), device=CPU)
    notes = tmp_path / "notes"
    notes.mkdir()
    tuner = tune.Tuner(
        tune.with_resources(train_emotion, {"cpu": 1}),
        param_space=json.loads(json.dumps(cfg.to_dict())),  # as a sweep hands it over: plain values
        run_config=tune.RunConfig(
            storage_path=str(tmp_path / "ray"),
            callbacks=[KillWorkerAfterFirstCheckpoint(notes)],
            failure_config=tune.FailureConfig(max_failures=1),
            verbose=0,
        ),
    )
    result = tuner.fit()[0]
    assert (notes / "killed").exists(), "no trial worker process was found to kill"
    assert (notes / "recovered").exists(), f"Tune did not retry the trial; {(notes / 'killed').read_text()}"
    assert result.error is None, result.error
    assert held_out(result.metrics) == held_out({k: v for k, v in uninterrupted.items()})
