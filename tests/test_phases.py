"""The recipe's phases are a seam benchmarks can trust: a tiny trial enters every phase, observers see each
one opened and closed in order, an expected phase that never comes raises naming it, and an unobserved
phase is the shared no-op."""

from __future__ import annotations

import threading

import pytest
import torch

from workers.core.phases import Phase, PhaseNotEntered, observe, phase, waits
from workers.core.reporting import ListReporter
from workers.core.tracking import NullLogger
from workers.finetune.config import TrialConfig
from workers.finetune.recipe import run_trial
from workers.vocabulary import Key


class Recorder:
    """Every enter and exit, per thread, with the info the phase carried."""

    def __init__(self):
        self.events: list[tuple[str, str, str, dict]] = []
        self.lock = threading.Lock()

    def enter(self, name, info):
        with self.lock:
            self.events.append(("enter", threading.current_thread().name, str(name), info))

    def exit(self, name, info):
        with self.lock:
            self.events.append(("exit", threading.current_thread().name, str(name), info))

    def counts(self, kind: str = "enter") -> dict[str, int]:
        counts: dict[str, int] = {}
        for event, _, name, _ in self.events:
            if event == kind:
                counts[name] = counts.get(name, 0) + 1
        return counts


class MetricsLogger(NullLogger):
    def __init__(self):
        self.rounds = 0

    def log_metrics(self, metrics, step=None):
        self.rounds += Key.curve(Key.TRAIN_LR) in metrics


def test_a_tiny_trial_enters_every_phase_and_closes_each_in_order(demo_dir, tmp_path):
    # Head-only stage from a cold feature cache, then all_but_cnn; val clips, rounds every 2 steps,
    # the writer thread on: every phase the recipe has.
    cfg = TrialConfig(
        data_dir=str(demo_dir),
        train_speakers=("0011", "0012"),
        eval_sets={"test_en": ("0015",)},
        val_fraction=0.25,
        eval_every_steps=2,
        feature_cache_dir=str(tmp_path / "features"),
        stages=(
            {"trainable": "head", "epochs": 0.25, "learning_rate": 1e-3, "batch_size": 4},
            {"trainable": "all_but_cnn", "epochs": 0.25, "learning_rate": 1e-3, "batch_size": 4},
        ),
    )
    recorder, logger = Recorder(), MetricsLogger()
    with observe(recorder, expect=tuple(Phase)) as observation:
        final = run_trial(cfg, logger, ListReporter(), device=torch.device("cpu"))

    entered = recorder.counts("enter")
    assert set(entered) == {str(p) for p in Phase}
    assert entered == recorder.counts("exit") and dict(observation.counts) == entered
    assert entered["train_step"] == entered["data_wait"] - 2 == final["step"]  # one last wait per stage ends it
    assert entered["evaluation_round"] == logger.rounds > 0
    assert entered["setup"] == entered["finish"] == entered["final_evaluation"] == 1
    # On each thread, phases nest: every exit closes the phase entered last.
    for thread in {t for _, t, _, _ in recorder.events}:
        stack = []
        for event, t, name, _ in recorder.events:
            if t != thread:
                continue
            if event == "enter":
                stack.append(name)
            else:
                assert stack.pop() == name
        assert not stack
    main = threading.main_thread().name
    assert {name for _, t, name, _ in recorder.events if t != main} == {"logging"}  # the writer thread's batches
    steps = [info for event, _, name, info in recorder.events if event == "exit" and name == "train_step"]
    assert all(len(info["batches"]) == 1 and 0 < len(info["batches"][0].rows) <= 4 for info in steps)


def test_an_expected_phase_never_entered_raises_naming_it():
    with pytest.raises(PhaseNotEntered, match="'feature_cache'") as raised:
        with observe(Recorder(), expect=(Phase.SETUP, Phase.FEATURE_CACHE)):
            with phase(Phase.SETUP):
                pass
    assert raised.value.missing == [Phase.FEATURE_CACHE]


def test_a_name_that_is_no_phase_is_refused_at_once():
    # bench/gpu.py once timed `pooled_features` by patching; the name had gone and the phase read 0.
    with pytest.raises(ValueError, match="pooled_features"):
        with observe(Recorder(), expect=("pooled_features",)):
            pass


def test_an_unobserved_phase_is_the_shared_no_op_and_observers_leave_with_their_block():
    assert phase(Phase.TRAIN_STEP) is phase(Phase.SETUP)
    recorder = Recorder()
    with observe(recorder):
        with phase(Phase.TRAIN_STEP, batches=[]):
            pass
    with phase(Phase.TRAIN_STEP):
        pass
    assert [(e, n) for e, _, n, _ in recorder.events] == [("enter", "train_step"), ("exit", "train_step")]
    assert phase(Phase.TRAIN_STEP) is phase(Phase.SETUP)


def test_waits_yields_every_item_and_times_each_wait():
    recorder = Recorder()
    with observe(recorder, expect=(Phase.DATA_WAIT,)):
        assert list(waits(Phase.DATA_WAIT, iter([1, 2, 3]))) == [1, 2, 3]
    assert recorder.counts()["data_wait"] == 4  # three items and the end


def test_a_phase_is_a_region_of_a_torch_profiler_trace():
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        with phase(Phase.TRAIN_STEP):
            torch.ones(4).sum()
    assert "train_step" in {event.key for event in profile.key_averages()}
