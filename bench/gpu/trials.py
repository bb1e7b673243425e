"""(3)-(5) trials in child processes: each runs workers.finetune.recipe.run_trial and is timed through the
recipe's phases (workers/core/phases.py), never by patching it; a phase the bench expects that the trial
never entered stops the run, naming the phase, instead of reading 0."""

from __future__ import annotations

import multiprocessing
import tempfile
import threading
import time
from pathlib import Path

import torch

from bench.gpu.corpus import TRAIN_SPEAKERS, Sizes
from bench.gpu.measure import BusySampler, has_module, read_json, run_children, sync, write_json
from shards.schema import SAMPLE_RATE
from workers.core.phases import Phase, PhaseNotEntered, observe

# The phases timed (device synchronised at both ends, as a phase's kernels may still run) and their keys.
TIMED = {
    Phase.SETUP: "setup",
    Phase.FEATURE_CACHE: "feature_cache",
    Phase.FEATURE_PASS: "feature_pass",
    Phase.TRAIN_STEP: "train_steps",
    Phase.PREDICT: "predict",
    Phase.EVALUATION_ROUND: "evaluation",
    Phase.FINAL_EVALUATION: "final_evaluation",
    Phase.CHECKPOINT: "checkpoint",  # the model written and handed to the reporter, which copies it as Tune does
}
# What every bench trial enters; trials with evaluation rounds or a cached head-only stage expect those too.
EXPECTED = (
    Phase.SETUP,
    Phase.DATA_WAIT,
    Phase.TRAIN_STEP,
    Phase.PREDICT,
    Phase.FINISH,
    Phase.FINAL_EVALUATION,
    Phase.CHECKPOINT,
)


class TrialClock:
    """A phase observer: wall seconds and counts per phase of one trial, its training window (from the end of
    setup, after packed trials met at the barrier, to the start of finish) and the audio it trained on and
    ran forward (for the utilisation)."""

    def __init__(self, device: torch.device, barrier=None):
        self.device = device
        self.barrier = barrier
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.marks: dict[str, float] = {}
        self.counters = {"train_audio_s": 0.0, "forward_audio_s": 0.0, "train_steps": 0}
        self.in_window = False
        self._started: dict[Phase, float] = {}

    def enter(self, name: Phase, info: dict) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # the MLflow writer thread: not part of the trial's wall split
        if name == Phase.FINISH:
            self.marks["train_end"] = time.time()
            self.in_window = False
        if name in TIMED:
            sync(self.device)
            self._started[name] = time.perf_counter()

    def exit(self, name: Phase, info: dict) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if name in TIMED:
            sync(self.device)
            self.add(TIMED[name], time.perf_counter() - self._started.pop(name))
        if name == Phase.SETUP:
            self.start_window()
        elif name == Phase.TRAIN_STEP:
            self.counters["train_steps"] += 1
            # Audio and cached front-end batches alike; a head-only stage's pooled features count no audio
            lengths = sum(b.audio_samples() for b in info["batches"] if hasattr(b, "audio_samples"))
            self.counters["train_audio_s"] += lengths / SAMPLE_RATE
        elif name in (Phase.PREDICT, Phase.FEATURE_PASS):
            reader = getattr(info["source"], "reader", None)  # None: cached features, no encoder pass
            if reader is not None:
                self.counters["forward_audio_s"] += float(reader.index.num_samples[info["rows"]].sum()) / SAMPLE_RATE

    def add(self, key: str, seconds: float) -> None:
        self.seconds[key] = self.seconds.get(key, 0.0) + seconds
        self.counts[key] = self.counts.get(key, 0) + 1
        if self.in_window:
            self.seconds[f"{key}_in_window"] = self.seconds.get(f"{key}_in_window", 0.0) + seconds

    def start_window(self) -> None:
        if self.barrier is not None:
            waited = time.perf_counter()
            self.barrier.wait(timeout=600)  # every packed trial starts training together
            self.marks["barrier_wait_s"] = time.perf_counter() - waited
        self.marks["train_start"] = time.time()
        self.in_window = True


class BenchLogger:
    """A null logger that also drops figures without drawing them (matplotlib may be absent)."""

    def log_params(self, params: dict) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_dict(self, dictionary: dict, artifact_file: str) -> None: ...
    def log_artifacts(self, local_dir: str, artifact_path: str) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_datasets(self, splits: list) -> None: ...
    def log_model(self, model_dir: str, metrics=None, step=None, model_step: int = 0) -> None: ...

    def run_tags(self) -> dict[str, str]:
        return {}

    def completed_metrics(self) -> dict[str, float] | None:
        return None

    def log_figure(self, figure, artifact_file: str) -> None:
        if figure is not None:
            import matplotlib.pyplot as plt

            plt.close(figure)


def measure_trial(cfg_values: dict, device: torch.device, barrier=None, expect=EXPECTED) -> dict:
    """One trial through workers.finetune.recipe.run_trial, its wall time split by phase; raises
    PhaseNotEntered when an `expect`ed phase never came (its figure would read 0)."""
    import workers.finetune.recipe as recipe
    from workers.core.reporting import ListReporter
    from workers.finetune.config import TrialConfig

    clock = TrialClock(device, barrier)
    if not has_module("matplotlib"):  # not timing: the device image may lack matplotlib, and figures are dropped
        recipe.confusion_figure = recipe.reliability_figure = lambda *a, **k: None
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as tune_dir, observe(clock, expect=expect):
        reporter = ListReporter(checkpoint_root=Path(tune_dir))  # copies checkpoints, as Tune does
        started = time.perf_counter()
        metrics = recipe.run_trial(TrialConfig.from_dict(cfg_values), BenchLogger(), reporter, device)
        wall = time.perf_counter() - started
    return {
        "wall_s": wall - clock.marks.get("barrier_wait_s", 0.0),
        "phases_s": clock.seconds,
        "phase_counts": clock.counts,
        **clock.counters,
        **clock.marks,
        "trial_seconds_reported": metrics.get("trial_seconds"),
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30 if device.type == "cuda" else None,
    }


def trial_worker(cfg_values: dict, device_name: str, barrier, result_path: str, expect: tuple[str, ...]) -> None:
    """Child process: measure_trial, its result (or the phases it missed) written to `result_path`."""
    try:
        result = measure_trial(cfg_values, torch.device(device_name), barrier, expect)
    except PhaseNotEntered as error:
        write_json(result_path, {"error": str(error), "missing_phases": [str(p) for p in error.missing]})
        raise
    write_json(result_path, result)


def run_trials(
    configs: list[dict], device: torch.device, timeout_s: float, expect: tuple[str, ...] = EXPECTED
) -> tuple[list[dict], float | None]:
    """N trials at once on the one device, started together; per-trial results and the GPU busy fraction.
    Raises when a trial missed a phase in `expect`: the run stops rather than report a phase as 0 s."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(configs)) if len(configs) > 1 else None
    with tempfile.TemporaryDirectory(prefix="bench-trials-") as tmp, BusySampler() as sampler:
        paths = [str(Path(tmp) / f"trial{i}.json") for i in range(len(configs))]
        args = [(cfg, str(device), barrier, path, tuple(map(str, expect))) for cfg, path in zip(configs, paths)]
        exit_codes = run_children(trial_worker, args, timeout_s)
        results = [read_json(p) or {"error": f"exit code {code}"} for p, code in zip(paths, exit_codes)]
    check_phases(results)
    done = [r for r in results if "train_start" in r and "train_end" in r]
    busy = sampler.fraction(min(r["train_start"] for r in done), max(r["train_end"] for r in done)) if done else None
    return results, busy


def check_phases(results: list[dict]) -> None:
    """Raise PhaseNotEntered for the phases any trial reported missing."""
    missing = sorted({name for result in results for name in result.get("missing_phases", ())})
    if missing:
        raise PhaseNotEntered([Phase(name) for name in missing])


def trial_config(data_dir: Path, sizes: Sizes, cache_dir: str, threads: int, **fields) -> dict:
    return {
        "data_dir": str(data_dir),
        "start": sizes.encoder,
        "train_speakers": TRAIN_SPEAKERS,
        "feature_cache_dir": cache_dir,
        "num_threads": threads,
        **fields,
    }


def aggregate(results: list[dict], flops: dict, peak_tflops: float) -> dict:
    """Aggregate training throughput over the window in which the trials trained together."""
    done = [r for r in results if "train_start" in r and "train_end" in r]
    if not done:
        return {"complete": 0}
    window = max(r["train_end"] for r in done) - min(r["train_start"] for r in done)
    train_audio = sum(r["train_audio_s"] for r in done)
    forward_audio = sum(r["forward_audio_s"] for r in done)
    model_flops = train_audio * flops["train"] + forward_audio * flops["forward"]
    return {
        "complete": len(done),
        "window_s": window,
        "aggregate_audio_s_per_s": train_audio / window,
        "mfu": model_flops / window / 1e12 / peak_tflops,
        "peak_memory_gib_per_trial": max((r["peak_memory_gib"] or 0.0) for r in done) or None,
    }
