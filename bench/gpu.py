"""The GPU fast path, measured in one prepared run: `python -m bench gpu --out DIR` (or $OUT).

Runs without Ray or MLflow (the device image has torch, transformers, pyarrow, peft): trials go
through `workers.finetune.recipe.run_trial` with a null logger and an in-memory reporter, and Ray's
fractional GPUs (`--gpus-per-trial 1/N`) are emulated by N trial processes on the one GPU.

    data          an ESD-sized noise corpus (4 English speakers x 1,750 clips of ESD's length
                  distribution, a held-out speaker of 1,750 and a small probe speaker), written
                  through shards.writer.ShardWriter, so trials read real shards
    step          (1) step time, audio-s/s and model FLOP utilisation for batch 8/16/32 of bucketed
                  clips: fp32 (TF32) vs bf16 autocast, eager vs SDPA attention, fused vs foreach
                  AdamW, and torch.compile (dynamic shapes) in a child process with a time limit
    evaluation    (2) forward throughput through the evaluation loader at several batch sizes
    concurrency   (3) N = 1, 2, 4, 8 trials at once: aggregate audio-s/s, MFU, peak memory per
                  trial, NVML busy fraction
    paper_trial   (4) one `paper_finer` trial end to end, evaluation every 10 steps and raised:
                  wall split into setup, feature cache, training, evaluation, checkpoint writes
    packed        (5) the same with 4 trials packed on the GPU

Every section has a share of `--budget-s`; the trial sections shrink the epochs (epoch_scale) to
fit and extrapolate a full trial from the measured split. `--dry-run` runs everything on the CPU
with a tiny encoder and a few clips (same JSON shape). FLOPs are counted as bench/figures.py does
(torch's FlopCounterMode over a real step), against 790 TFLOP/s dense bf16 on an H200.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.figures import ESD_LENGTHS, H200_BF16_PEAK_TFLOPS, esd_like_lengths
from shards.schema import EMOTIONS, SAMPLE_RATE, Clip
from shards.writer import ShardWriter

TRAIN_SPEAKERS = ("0011", "0012", "0013", "0014")
TEST_SPEAKER = "0015"  # the paper's held-out English speaker set, ESD-sized
PROBE_SPEAKER = "0016"  # a few clips: the final evaluation of throughput-only trials stays short
SPEAKERS = {s: {"language": "en", "gender": "F" if int(s) % 2 else "M"} for s in (*TRAIN_SPEAKERS, TEST_SPEAKER)}
SPEAKERS[PROBE_SPEAKER] = {"language": "en", "gender": "M"}


@dataclass(frozen=True)
class Sizes:
    """How big each section is: the H200 run, or the CPU dry run."""

    encoder: str  # a workers.finetune.model.CONFIG_STARTS name (random weights)
    clips_per_speaker: int  # training speakers and the held-out one (ESD: 1,750)
    probe_clips: int
    batch_sizes: tuple[int, ...]  # (1) training batch sizes; the first is the paper's
    eval_batch_sizes: tuple[int, ...]  # (2)
    batches_per_combo: int  # (1) distinct bucketed batches timed per configuration
    repeats: int  # (1) passes over them
    concurrency: tuple[int, ...]  # (3)
    packed: int  # (5)
    raised_eval_every: int  # (4) eval_every_steps raised from the paper's 10
    budget_s: float
    compile_backend: str  # inductor on the GPU; the dry run traces with dynamo only
    min_child_timeout_s: float  # a child process (compile, trials) gets at least this long
    max_concurrency_steps: int  # (3) optimizer steps over all trials of one N, at most
    max_epoch_scale: float  # (4, 5) at most this share of a paper_finer trial's epochs
    threads: int  # torch CPU threads of this process and of all trials together (0: all cores)


FULL = Sizes(
    encoder="xlsr53_random",
    clips_per_speaker=1750,
    probe_clips=48,
    batch_sizes=(8, 16, 32),
    eval_batch_sizes=(16, 32, 64),
    batches_per_combo=4,
    repeats=2,
    concurrency=(1, 2, 4, 8),
    packed=4,
    raised_eval_every=100,
    budget_s=300.0,
    compile_backend="inductor",
    min_child_timeout_s=60.0,
    max_concurrency_steps=10**6,
    max_epoch_scale=1.0,
    threads=0,
)
DRY = dataclasses.replace(
    FULL,
    encoder="tiny",
    clips_per_speaker=12,
    probe_clips=6,
    batch_sizes=(2, 4),
    eval_batch_sizes=(4, 8),
    batches_per_combo=2,
    repeats=1,
    concurrency=(1, 2),
    packed=2,
    raised_eval_every=50,
    budget_s=3600.0,  # nothing is skipped for time in a dry run, however loaded the machine
    compile_backend="eager",
    min_child_timeout_s=300.0,
    max_concurrency_steps=24,
    max_epoch_scale=0.5,
    threads=1,
)

# Shares of the budget (after the data is built); the trial sections rescale their epochs to fit.
SHARES = {"step": 0.1, "compile": 0.2, "evaluation": 0.03, "concurrency": 0.17, "paper_trial": 0.22, "packed": 0.28}
# Child processes still running this long after the budget is spent are ended, so the whole run
# (and its JSON) finishes inside the device's time even when a section overruns its share.
GRACE_S = 30.0
_hard_stop_at = float("inf")  # perf_counter() time; set by run()


# -- Data ----------------------------------------------------------------------------------------


def noise_clip(seconds: float, emotion_index: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise whose loudness follows the emotion: cheap (7,000 clips in seconds), and learnable."""
    num_samples = max(int(seconds * SAMPLE_RATE), 400)
    gain = 600.0 * (1.0 + 0.35 * emotion_index)
    return (rng.standard_normal(num_samples, dtype=np.float32) * gain).clip(-32767, 32767).astype(np.int16)


def write_noise_corpus(out_dir: Path, sizes: Sizes, seed: int = 0) -> dict:
    """ESD's shape with noise audio, through the project's shard writer (manifest, hashes, atomic shards)."""
    rng = np.random.default_rng(seed)
    mean_s, max_s = ESD_LENGTHS["en"]
    counts = {s: sizes.clips_per_speaker for s in (*TRAIN_SPEAKERS, TEST_SPEAKER)}
    counts[PROBE_SPEAKER] = sizes.probe_clips
    extra = {"source": {"kind": "bench-noise", "seed": seed, "clips_per_speaker": sizes.clips_per_speaker}}
    with ShardWriter(Path(out_dir), speakers=SPEAKERS, extra_manifest=extra) as writer:
        for speaker, count in counts.items():
            for k, seconds in enumerate(esd_like_lengths(mean_s, max_s, count, rng)):
                e = k % len(EMOTIONS)
                audio = noise_clip(float(seconds), e, rng)
                writer.add(Clip(f"{speaker}_{k + 1:06d}", speaker, "en", EMOTIONS[e], "train", "", audio))
    return writer.close()


# -- Measuring helpers ---------------------------------------------------------------------------


class Budget:
    def __init__(self, total_s: float):
        self.total_s = total_s
        self.deadline = time.perf_counter() + total_s

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def slot(self, share: float) -> float:
        return max(0.0, min(self.left(), share * self.total_s))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


class BusySampler:
    """GPU busy fraction from NVML's utilisation counter (share of time a kernel ran), sampled on a thread."""

    def __init__(self, interval_s: float = 0.05):
        self.interval_s = interval_s
        self.samples: list[tuple[float, float]] = []
        self.handle = None
        self.nvml = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self.nvml = pynvml
        except Exception:  # no NVML here (CPU dry run, or nvidia-ml-py missing): busy fraction is null
            self.handle = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            rates = self.nvml.nvmlDeviceGetUtilizationRates(self.handle)
            self.samples.append((time.time(), rates.gpu / 100.0))

    def __enter__(self) -> BusySampler:
        if self.handle is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def fraction(self, start: float, end: float) -> float | None:
        inside = [u for t, u in self.samples if start <= t <= end]
        return float(np.mean(inside)) if inside else None


# -- (1) Training step ---------------------------------------------------------------------------


def build_classifier(sizes: Sizes, device: torch.device):
    from workers.finetune.config import TrialConfig
    from workers.finetune.model import EmotionClassifier, build_encoder, set_trainable

    # The trial's own encoder regularisation (dropouts, layerdrop, SpecAugment), as a trial trains.
    model = EmotionClassifier(build_encoder(sizes.encoder, TrialConfig().encoder_overrides())).to(device)
    set_trainable(model, "all_but_cnn")
    model.train()
    return model


def make_optimizer(model, device: torch.device, kind: str) -> torch.optim.Optimizer:
    parameters = [p for p in model.parameters() if p.requires_grad]
    if kind == "fused":
        return torch.optim.AdamW(parameters, lr=1e-5, fused=True)
    return torch.optim.AdamW(parameters, lr=1e-5, foreach=True)


def sample_batches(reader, batch_size: int, count: int, device: torch.device, seed: int = 0) -> list:
    """`count` bucketed training batches (as a trial plans them), on the device."""
    from shards.batching import plan_batches
    from workers.finetune.loader import audio_batch

    rows = reader.index.select(TRAIN_SPEAKERS)
    rng = np.random.default_rng(seed)
    plans = plan_batches(reader.index, rows, batch_size, rng)
    chosen = rng.choice(len(plans), size=min(count, len(plans)), replace=False)
    return [audio_batch(reader, plans[i], 0, device.type == "cuda").to(device) for i in chosen]


def audio_seconds(batches) -> float:
    return float(sum(int(b.lengths.sum()) for b in batches)) / SAMPLE_RATE


def train_step(model, optimizer, batch, precision: str, device: torch.device) -> None:
    """What workers.finetune.recipe.train_step does for one micro-batch: loss, backward, clipping, AdamW."""
    from workers.finetune.model import normalize_audio

    values, mask = normalize_audio(batch.audio, batch.lengths)
    with autocast(device, precision):
        logits = model(values, attention_mask=mask).float()
    loss = torch.nn.functional.cross_entropy(logits, batch.labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    optimizer.step()


def timed_steps(model, optimizer, batches, precision: str, device: torch.device, repeats: int) -> float:
    """Mean seconds a step over `batches`; the same seeds per batch, so layerdrop skips the same layers."""
    sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        for i, batch in enumerate(batches):
            torch.manual_seed(i)
            np.random.seed(i)
            train_step(model, optimizer, batch, precision, device)
    sync(device)
    return (time.perf_counter() - started) / (repeats * len(batches))


def counted_flops(model, optimizer, batches, device: torch.device) -> float:
    """FLOPs of one fp32 step over each batch (forward + backward + optimizer), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        for i, batch in enumerate(batches):
            torch.manual_seed(i)
            np.random.seed(i)
            train_step(model, optimizer, batch, "fp32", device)
    sync(device)
    return float(counter.get_total_flops())


def step_row(label: dict, step_s: float, batches, flops: float, peak_tflops: float) -> dict:
    per_step_flops = flops / len(batches)
    return {
        **label,
        "step_ms": step_s * 1e3,
        "audio_s_per_s": audio_seconds(batches) / len(batches) / step_s,
        "tflops": per_step_flops / step_s / 1e12,
        "mfu": per_step_flops / step_s / 1e12 / peak_tflops,
    }


def step_section(reader, sizes: Sizes, device: torch.device, peak_tflops: float, slot_s: float) -> dict:
    """(1) eager grid: batch x precision x attention, then fused vs foreach AdamW; FLOPs per audio-second."""
    started = time.perf_counter()
    model = build_classifier(sizes, device)
    optimizers = {"fused": make_optimizer(model, device, "fused")}
    rows, flops_per_audio_s, skipped = [], {}, []
    for batch_size in sizes.batch_sizes:
        batches = sample_batches(reader, batch_size, sizes.batches_per_combo, device)
        model.encoder.set_attn_implementation("eager")
        flops = counted_flops(model, optimizers["fused"], batches, device)  # also the warm-up
        flops_per_audio_s[batch_size] = flops / audio_seconds(batches)
        for attention in ("eager", "sdpa"):
            model.encoder.set_attn_implementation(attention)
            for precision in ("fp32", "bf16"):
                if time.perf_counter() - started > slot_s:
                    skipped.append(f"batch {batch_size} {precision} {attention}")
                    continue
                timed_steps(model, optimizers["fused"], batches[:1], precision, device, 1)  # warm this path
                step_s = timed_steps(model, optimizers["fused"], batches, precision, device, sizes.repeats)
                label = {"batch": batch_size, "precision": precision, "attention": attention, "optimizer": "fused"}
                rows.append(step_row(label, step_s, batches, flops, peak_tflops))
    batch_size = sizes.batch_sizes[0]
    batches = sample_batches(reader, batch_size, sizes.batches_per_combo, device)
    model.encoder.set_attn_implementation("sdpa")
    optimizers["foreach"] = make_optimizer(model, device, "foreach")
    for kind in ("foreach", "fused"):
        timed_steps(model, optimizers[kind], batches[:1], "bf16", device, 1)
        step_s = timed_steps(model, optimizers[kind], batches, "bf16", device, sizes.repeats)
        label = {"batch": batch_size, "precision": "bf16", "attention": "sdpa", "optimizer": kind}
        rows.append(
            step_row(label, step_s, batches, flops_per_audio_s[batch_size] * audio_seconds(batches), peak_tflops)
        )
    params = sum(p.numel() for p in model.parameters())
    del model, optimizers
    release(device)
    return {
        "params_million": params / 1e6,
        "flops_per_audio_second": {str(b): f for b, f in flops_per_audio_s.items()},
        "rows": rows,
        "skipped": skipped,
        "seconds": time.perf_counter() - started,
    }


def compile_worker(sizes_dict: dict, data_dir: str, device_name: str, peak_tflops: float, result_path: str) -> None:
    """Child process: torch.compile(dynamic=True) of the encoder, bf16 + SDPA, each batch size."""
    import torch._dynamo

    from shards.reader import open_reader

    sizes = Sizes(**{k: tuple(v) if isinstance(v, list) else v for k, v in sizes_dict.items()})
    device = torch.device(device_name)
    reader = open_reader(data_dir)
    model = build_classifier(sizes, device)
    model.encoder.set_attn_implementation("sdpa")
    optimizer = make_optimizer(model, device, "fused")
    model.encoder.compile(dynamic=True, backend=sizes.compile_backend)
    rows, first_step_s = [], {}
    for batch_size in sizes.batch_sizes:
        batches = sample_batches(reader, batch_size, sizes.batches_per_combo, device)
        first_step_s[str(batch_size)] = timed_steps(model, optimizer, batches[:1], "bf16", device, 1)
        timed_steps(model, optimizer, batches, "bf16", device, 1)  # remaining shapes: recompiles, if any
        step_s = timed_steps(model, optimizer, batches, "bf16", device, sizes.repeats)
        label = {"batch": batch_size, "precision": "bf16", "attention": "sdpa", "compiled": True}
        rows.append({**label, "step_ms": step_s * 1e3, "audio_s_per_s": audio_seconds(batches) / len(batches) / step_s})
        _write_json(result_path, {"rows": rows, "first_step_s": first_step_s})
    counters = torch._dynamo.utils.counters
    result = {
        "rows": rows,
        "first_step_s": first_step_s,
        "backend": sizes.compile_backend,
        "graph_breaks": int(sum(counters["graph_break"].values())),
        "unique_graphs": int(counters["stats"]["unique_graphs"]),
    }
    _write_json(result_path, result)


def compile_section(sizes: Sizes, data_dir: Path, device: torch.device, step: dict, peak: float, slot_s: float) -> dict:
    """(1, continued) compile in a child with a time limit: a slow compile cannot sink the run."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result_path = str(Path(tmp) / "compile.json")
        args = (dataclasses.asdict(sizes), str(data_dir), str(device), peak, result_path)
        exit_codes = run_children(compile_worker, [args], timeout_s=max(slot_s, sizes.min_child_timeout_s))
        result = _read_json(result_path) or {"rows": []}
    eager = {
        r["batch"]: r
        for r in step["rows"]
        if (r["precision"], r["attention"], r["optimizer"]) == ("bf16", "sdpa", "fused")
    }
    for row in result["rows"]:
        flops = step["flops_per_audio_second"][str(row["batch"])] * row["audio_s_per_s"]
        row["tflops"] = flops / 1e12
        row["mfu"] = flops / 1e12 / peak
        if row["batch"] in eager:
            row["speedup_vs_eager"] = eager[row["batch"]]["step_ms"] / row["step_ms"]
    result["exit_code"] = exit_codes[0]
    result["complete"] = len(result["rows"]) == len(sizes.batch_sizes)
    result["seconds"] = time.perf_counter() - started
    return result


# -- (2) Evaluation ------------------------------------------------------------------------------


def evaluation_section(reader, sizes: Sizes, device: torch.device, peak_tflops: float, slot_s: float) -> dict:
    """(2) forward-only throughput through the evaluation loader (sorted by length, prefetched)."""
    from torch.utils.flop_counter import FlopCounterMode

    from workers.finetune.loader import audio_eval_batches
    from workers.finetune.model import normalize_audio

    started = time.perf_counter()
    model = build_classifier(sizes, device)
    model.encoder.set_attn_implementation("sdpa")
    model.eval()
    rows_test = reader.index.select((TEST_SPEAKER,))
    test_audio_s = float(reader.index.num_samples[rows_test].sum()) / SAMPLE_RATE

    @torch.no_grad()
    def one_pass(model, batch_size: int) -> None:
        for host_batch in audio_eval_batches(reader, rows_test, batch_size, device.type == "cuda", 4):
            batch = host_batch.to(device)
            values, mask = normalize_audio(batch.audio, batch.lengths)
            with autocast(device, "bf16"):
                torch.softmax(model(values, attention_mask=mask).float(), dim=-1)
        sync(device)

    probe = next(iter(audio_eval_batches(reader, rows_test[:8], 8, False, 0))).to(device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        values, mask = normalize_audio(probe.audio, probe.lengths)
        model(values, attention_mask=mask)
    forward_flops_per_audio_s = counter.get_total_flops() / audio_seconds([probe])
    results = []
    for batch_size in sizes.eval_batch_sizes:
        if time.perf_counter() - started > slot_s:
            break
        one_pass(model, batch_size)  # warm-up (cuDNN/cuBLAS choices for these shapes)
        pass_started = time.perf_counter()
        one_pass(model, batch_size)
        seconds = time.perf_counter() - pass_started
        rate = test_audio_s / seconds
        results.append(
            {
                "eval_batch": batch_size,
                "clips_per_s": len(rows_test) / seconds,
                "audio_s_per_s": rate,
                "mfu": rate * forward_flops_per_audio_s / 1e12 / peak_tflops,
            }
        )
    del model
    release(device)
    return {
        "clips": len(rows_test),
        "audio_seconds": test_audio_s,
        "forward_flops_per_audio_second": forward_flops_per_audio_s,
        "rows": results,
        "seconds": time.perf_counter() - started,
    }


# -- Trials in child processes (3)-(5) -----------------------------------------------------------


class PhaseClock:
    """Wall seconds per phase of a trial, by wrapping the recipe's own step functions in this process."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.in_window = False  # between the end of setup and the start of finish: the training window
        self.missing: list[str] = []  # recipe functions not found (renamed since): their phase reads 0

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds
        self.counts[phase] = self.counts.get(phase, 0) + 1
        if self.in_window:
            self.seconds[f"{phase}_in_window"] = self.seconds.get(f"{phase}_in_window", 0.0) + seconds

    def wrap(self, module, name: str, phase: str, after=None) -> None:
        original = getattr(module, name, None)
        if original is None:
            self.missing.append(name)
            return

        def timed(*args, **kwargs):
            sync(self.device)
            started = time.perf_counter()
            result = original(*args, **kwargs)
            sync(self.device)
            self.add(phase, time.perf_counter() - started)
            if after is not None:
                after(args, result)
            return result

        setattr(module, name, timed)


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


def trial_worker(cfg_values: dict, device_name: str, barrier, result_path: str) -> None:
    """Child process: one trial through workers.finetune.recipe.run_trial, its wall time split by phase."""
    if not _has("sklearn"):
        sys.modules["sklearn.metrics"] = sklearn_metrics_standin()
    import workers.finetune.recipe as recipe
    from workers.core.reporting import ListReporter
    from workers.finetune.config import TrialConfig

    device = torch.device(device_name)
    clock = PhaseClock(device)
    counters = {"train_audio_s": 0.0, "forward_audio_s": 0.0, "train_steps": 0}
    marks: dict[str, float] = {}
    index_seconds = None

    def after_setup(args, trial):
        nonlocal index_seconds
        index_seconds = trial.data.reader.index.num_samples / SAMPLE_RATE
        if barrier is not None:
            waited = time.perf_counter()
            barrier.wait(timeout=600)  # every packed trial starts training together
            marks["barrier_wait_s"] = time.perf_counter() - waited
        marks["train_start"] = time.time()
        clock.in_window = True

    def after_step(args, result):
        counters["train_steps"] += 1
        counters["train_audio_s"] += sum(float(b.lengths.sum()) for b in args[4] if hasattr(b, "lengths")) / SAMPLE_RATE

    def after_forward(args, result):
        if isinstance(args[1], recipe.AudioSource) or len(args) == 2:  # predict(trial, source, rows) / pooled_features
            counters["forward_audio_s"] += float(index_seconds[args[-1]].sum())

    clock.wrap(recipe, "setup", "setup", after_setup)
    clock.wrap(recipe, "frozen_features", "feature_cache")
    clock.wrap(recipe, "pooled_features", "feature_pass", after_forward)
    clock.wrap(recipe, "train_step", "train_steps", after_step)
    clock.wrap(recipe, "predict", "predict", after_forward)
    clock.wrap(recipe, "evaluation_round", "evaluation")
    clock.wrap(recipe, "evaluate_all", "final_evaluation")
    clock.wrap(recipe, "save_model", "checkpoint")
    clock.wrap(recipe, "save_train_state", "checkpoint")
    original_finish = recipe.finish

    def finish(*args, **kwargs):
        marks["train_end"] = time.time()
        clock.in_window = False
        return original_finish(*args, **kwargs)

    recipe.finish = finish
    if not _has("matplotlib"):
        recipe.confusion_figure = recipe.reliability_figure = lambda *a, **k: None
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as tune_dir:
        reporter = TimedReporter(ListReporter(checkpoint_root=Path(tune_dir)), clock)
        started = time.perf_counter()
        metrics = recipe.run_trial(TrialConfig.from_dict(cfg_values), BenchLogger(), reporter, device)
        wall = time.perf_counter() - started
    result = {
        "wall_s": wall - marks.get("barrier_wait_s", 0.0),
        "phases_s": clock.seconds,
        "phase_counts": clock.counts,
        "not_instrumented": clock.missing,
        **counters,
        **marks,
        "trial_seconds_reported": metrics.get("trial_seconds"),
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30 if device.type == "cuda" else None,
    }
    _write_json(result_path, result)


def sklearn_metrics_standin():
    """The three sklearn.metrics functions workers.core.metrics uses, in numpy (no scikit-learn on the device)."""
    import types

    def confusion_matrix(y_true, y_pred, labels):
        matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
        np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
        return matrix

    def precision_recall_fscore_support(y_true, y_pred, labels, zero_division=0):
        matrix = confusion_matrix(y_true, y_pred, labels).astype(float)
        hits, predicted, support = np.diag(matrix), matrix.sum(axis=0), matrix.sum(axis=1)
        precision = np.divide(hits, predicted, out=np.full_like(hits, zero_division), where=predicted > 0)
        recall = np.divide(hits, support, out=np.full_like(hits, zero_division), where=support > 0)
        total = precision + recall
        f1 = np.divide(2 * precision * recall, total, out=np.full_like(hits, zero_division), where=total > 0)
        return precision, recall, f1, support.astype(np.int64)

    def classification_report(y_true, y_pred, labels, target_names, digits=2, zero_division=0, output_dict=False):
        p, r, f, n = precision_recall_fscore_support(y_true, y_pred, labels, zero_division)
        return "\n".join(
            f"{t} {a:.{digits}f} {b:.{digits}f} {c:.{digits}f} {d}" for t, a, b, c, d in zip(target_names, p, r, f, n)
        )

    module = types.ModuleType("sklearn.metrics")
    module.confusion_matrix = confusion_matrix
    module.precision_recall_fscore_support = precision_recall_fscore_support
    module.classification_report = classification_report
    return module


class TimedReporter:
    """Tune's side of a report: a checkpoint directory is copied (ListReporter), timed as a checkpoint write."""

    def __init__(self, inner, clock: PhaseClock):
        self.inner = inner
        self.clock = clock

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None = None) -> None:
        started = time.perf_counter()
        self.inner.report(metrics, checkpoint_dir)
        if checkpoint_dir is not None:
            self.clock.add("checkpoint", time.perf_counter() - started)


def run_children(target, args_list: list[tuple], timeout_s: float) -> list[int | None]:
    """Start one spawned process per args tuple, wait up to `timeout_s`, end the ones still running."""
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=target, args=args, daemon=True) for args in args_list]
    for process in processes:
        process.start()
    deadline = min(time.perf_counter() + max(timeout_s, 1.0), _hard_stop_at)
    for process in processes:
        process.join(max(0.0, deadline - time.perf_counter()))
    for process in processes:
        if process.is_alive():
            process.terminate()
            process.join(10)
    return [process.exitcode for process in processes]


def run_trials(configs: list[dict], device: torch.device, timeout_s: float) -> tuple[list[dict], float | None]:
    """N trials at once on the one device, started together; per-trial results and the GPU busy fraction."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(configs)) if len(configs) > 1 else None
    with tempfile.TemporaryDirectory(prefix="bench-trials-") as tmp, BusySampler() as sampler:
        paths = [str(Path(tmp) / f"trial{i}.json") for i in range(len(configs))]
        args = [(cfg, str(device), barrier, path) for cfg, path in zip(configs, paths)]
        exit_codes = run_children(trial_worker, args, timeout_s)
        results = [_read_json(p) or {"error": f"exit code {code}"} for p, code in zip(paths, exit_codes)]
    done = [r for r in results if "train_start" in r and "train_end" in r]
    busy = sampler.fraction(min(r["train_start"] for r in done), max(r["train_end"] for r in done)) if done else None
    return results, busy


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


def concurrency_section(
    data_dir: Path, sizes: Sizes, device: torch.device, flops: dict, step_s: float, peak: float, slot_s: float
) -> dict:
    """(3) N trials of the training stage alone at once: what Ray's 1/N GPU per trial gives."""
    started = time.perf_counter()
    threads = max(1, (sizes.threads or os.cpu_count() or 2) // max(sizes.concurrency))
    rows = []
    train_clips = 4 * sizes.clips_per_speaker
    for n in sizes.concurrency:
        slot_left = slot_s - (time.perf_counter() - started)
        share = slot_left / (len(sizes.concurrency) - len(rows))
        # The same total work at every N (split over the trials): the window shrinks as packing helps.
        fixed_s = 15.0 if device.type == "cuda" else 2.0  # process start, imports, model build, final save
        total_steps = max(8 * n, int(max(share - fixed_s, share / 3) / max(step_s, 1e-3)))
        total_steps = min(total_steps, sizes.max_concurrency_steps)
        epochs = total_steps / n * sizes.batch_sizes[0] / train_clips
        stage = {
            "trainable": "all_but_cnn",
            "epochs": epochs,
            "learning_rate": 1e-4,
            "batch_size": sizes.batch_sizes[0],
        }
        config = trial_config(
            data_dir,
            sizes,
            "",
            threads,
            stages=(stage,),
            val_fraction=0.0,
            eval_sets={"probe": (PROBE_SPEAKER,)},
            checkpoint_on_best=False,
            cache_frozen_features=False,
        )
        configs = [{**config, "seed": i} for i in range(n)]
        results, busy = run_trials(configs, device, max(share, sizes.min_child_timeout_s))
        rows.append({"trials": n, **aggregate(results, flops, peak), "busy_fraction": busy, "trials_detail": results})
    return {"rows": rows, "seconds": time.perf_counter() - started}


def paper_trial_estimate(sizes: Sizes, step_s: float, eval_rate: float, eval_every: int) -> float:
    """Rough seconds of a full paper_finer trial's variable part (stage 2 steps + evaluation rounds)."""
    train_clips = 4 * sizes.clips_per_speaker
    steps = 2 * train_clips * 0.9 / sizes.batch_sizes[0]
    val_audio_s = 0.1 * train_clips * ESD_LENGTHS["en"][0]
    return steps / 2 * step_s + steps / eval_every * val_audio_s / max(eval_rate, 1e-3)


def split(result: dict, epoch_scale: float) -> dict:
    """A trial's wall split, and a full (epoch_scale 1) trial extrapolated: training and evaluation rounds scale."""
    phases = result.get("phases_s", {})
    window = result["train_end"] - result["train_start"]
    in_window = phases.get("evaluation", 0.0) + phases.get("feature_cache", 0.0)
    row = {
        "wall_s": result["wall_s"],
        "setup_s": phases.get("setup", 0.0),
        "feature_cache_s": phases.get("feature_cache", 0.0),
        "training_s": window - in_window - phases.get("checkpoint_in_window", 0.0),
        "evaluation_s": phases.get("evaluation", 0.0),
        "final_evaluation_s": phases.get("final_evaluation", 0.0),
        "checkpoint_s": phases.get("checkpoint", 0.0),
        "evaluation_rounds": result.get("phase_counts", {}).get("evaluation", 0),
        "train_steps": result["train_steps"],
    }
    row["other_s"] = row["wall_s"] - sum(v for k, v in row.items() if k.endswith("_s") and k != "wall_s")
    scaled = row["training_s"] + row["evaluation_s"]
    row["extrapolated_full_trial_s"] = row["wall_s"] - scaled + scaled / epoch_scale
    overhead = row["setup_s"] + row["checkpoint_s"] + max(row["other_s"], 0.0)
    row["overhead_fraction_of_full_trial"] = overhead / row["extrapolated_full_trial_s"]
    return row


def paper_trial_section(
    data_dir: Path, sizes: Sizes, device: torch.device, flops: dict, estimate: dict, peak: float, slot_s: float, n: int
) -> dict:
    """(4) one paper_finer trial end to end (n=1), or (5) n of them packed; eval every 10 steps and raised."""
    started = time.perf_counter()
    threads = max(1, (sizes.threads or os.cpu_count() or 2) // n)
    eval_everies = (10, sizes.raised_eval_every) if n == 1 else (10,)
    rows = []
    for eval_every in eval_everies:
        share = (slot_s - (time.perf_counter() - started)) / (len(eval_everies) - len(rows))
        variable_s = paper_trial_estimate(sizes, estimate["step_s"], estimate["eval_rate"], eval_every) * n
        fixed_s = 25.0 if device.type == "cuda" else 5.0
        epoch_scale = float(min(sizes.max_epoch_scale, max(0.02, (share * 0.8 - fixed_s) / max(variable_s, 1e-3))))
        with tempfile.TemporaryDirectory(prefix="bench-features-") as cache_dir:  # cold cache, shared by the pack
            config = trial_config(
                data_dir,
                sizes,
                cache_dir,
                threads,
                schedule="paper_finer",
                batch_size=sizes.batch_sizes[0],  # the paper's 8 (the dry run's smaller batches give it steps)
                eval_sets={"test_en": (TEST_SPEAKER,)},
                eval_every_steps=eval_every,
                epoch_scale=epoch_scale,
            )
            configs = [{**config, "learning_rate": 1e-4 * (0.5 + i)} for i in range(n)]
            results, busy = run_trials(configs, device, max(share, 60.0, sizes.min_child_timeout_s))
        done = [r for r in results if "train_end" in r]
        rows.append(
            {
                "trials": n,
                "eval_every_steps": eval_every,
                "epoch_scale": epoch_scale,
                **aggregate(results, flops, peak),
                "busy_fraction": busy,
                "per_trial": [split(r, epoch_scale) for r in done],
                "errors": [r["error"] for r in results if "error" in r],
            }
        )
    return {"rows": rows, "seconds": time.perf_counter() - started}


# -- Run -----------------------------------------------------------------------------------------


def release(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _write_json(path, values: dict) -> None:
    tmp = f"{path}.tmp"
    Path(tmp).write_text(json.dumps(values, indent=1, default=float))
    os.replace(tmp, path)


def _read_json(path) -> dict | None:
    return json.loads(Path(path).read_text()) if Path(path).exists() else None


def environment(device: torch.device, argv: list[str]) -> dict:
    import transformers

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python -m bench gpu " + " ".join(argv),
        "git_commit": commit or None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_count": os.cpu_count(),
        "nvml": _has("pynvml"),
        "matplotlib": _has("matplotlib"),
        "sklearn": _has("sklearn"),  # without it, trials compute their metrics with sklearn_metrics_standin()
    }


def run(sizes: Sizes, out_dir: Path, device: torch.device, peak_tflops: float, argv: list[str]) -> dict:
    total_started = time.perf_counter()
    if sizes.threads:
        torch.set_num_threads(sizes.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # as a trial sets it: "fp32" rows use TF32 matmuls
        torch.backends.cudnn.allow_tf32 = True
    report = {"environment": environment(device, argv), "sizes": dataclasses.asdict(sizes), "peak_tflops": peak_tflops}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        data_dir = Path(tmp) / "corpus"
        started = time.perf_counter()
        manifest = write_noise_corpus(data_dir, sizes)
        report["data"] = {
            "clips": manifest["num_clips"],
            "hours": manifest["total_seconds"] / 3600,
            "seconds": time.perf_counter() - started,
        }
        _progress(
            f"data: {manifest['num_clips']} clips, {manifest['total_seconds'] / 3600:.2f} h of audio",
            started,
            report,
            out_dir,
        )
        from shards.reader import open_reader

        reader = open_reader(data_dir)
        budget = Budget(sizes.budget_s - (time.perf_counter() - total_started))
        global _hard_stop_at
        _hard_stop_at = budget.deadline + GRACE_S

        started = time.perf_counter()
        report["step"] = step_section(reader, sizes, device, peak_tflops, budget.slot(SHARES["step"]))
        _progress(f"step: {len(report['step']['rows'])} configurations", started, report, out_dir)
        started = time.perf_counter()
        report["compile"] = compile_section(
            sizes, data_dir, device, report["step"], peak_tflops, budget.slot(SHARES["compile"])
        )
        _progress(f"compile: {len(report['compile']['rows'])} batch sizes", started, report, out_dir)
        started = time.perf_counter()
        report["evaluation"] = evaluation_section(reader, sizes, device, peak_tflops, budget.slot(SHARES["evaluation"]))
        _progress("evaluation", started, report, out_dir)

        paper_batch = [
            r
            for r in report["step"]["rows"]
            if r["batch"] == sizes.batch_sizes[0] and r["precision"] == "bf16" and r["attention"] == "sdpa"
        ]
        step_s = paper_batch[0]["step_ms"] / 1e3
        eval_rows = report["evaluation"]["rows"]
        flops = {
            "train": report["step"]["flops_per_audio_second"][str(sizes.batch_sizes[0])],
            "forward": report["evaluation"]["forward_flops_per_audio_second"],
        }
        estimate = {"step_s": step_s, "eval_rate": eval_rows[0]["audio_s_per_s"] if eval_rows else 100.0}
        started = time.perf_counter()
        report["concurrency"] = concurrency_section(
            data_dir, sizes, device, flops, step_s, peak_tflops, budget.slot(SHARES["concurrency"])
        )
        _progress("concurrency", started, report, out_dir)
        started = time.perf_counter()
        report["paper_trial"] = paper_trial_section(
            data_dir, sizes, device, flops, estimate, peak_tflops, budget.slot(SHARES["paper_trial"]), 1
        )
        _progress("paper_trial", started, report, out_dir)
        started = time.perf_counter()
        report["packed"] = paper_trial_section(
            data_dir, sizes, device, flops, estimate, peak_tflops, budget.left(), sizes.packed
        )
        _progress("packed", started, report, out_dir)
    report["total_seconds"] = time.perf_counter() - total_started
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(out_dir / "gpu.json", report)
    (out_dir / "gpu.md").write_text(markdown(report))
    return report


def _progress(message: str, started: float, report: dict, out_dir: Path) -> None:
    """Print how far the run is, and save what it has so far: a crash later still leaves the figures."""
    print(f"[bench gpu] {message} ({time.perf_counter() - started:.1f} s)", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(out_dir / "gpu.json", report)


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        f"# `python -m bench gpu` on {env['device']}",
        "",
        f"{env['date']}, torch {env['torch']}, transformers {env['transformers']}, CUDA {env['cuda']}; "
        f"`{env['command']}`; peak {report['peak_tflops']:.0f} TFLOP/s; total {report['total_seconds']:.0f} s.",
        f"Data: {report['data']['clips']} noise clips, {report['data']['hours']:.2f} h (ESD's length distribution).",
        "",
        "## (1) Training step (encoder all but CNN, bucketed batches)",
        "",
        "| batch | precision | attention | optimizer | compiled | step ms | audio-s/s | TFLOP/s | MFU |",
        "|---:|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in [*report["step"]["rows"], *report["compile"]["rows"]]:
        lines.append(
            f"| {r['batch']} | {r['precision']} | {r['attention']} | {r.get('optimizer', 'fused')} | "
            f"{'yes' if r.get('compiled') else 'no'} | {_fmt(r['step_ms'])} | {_fmt(r['audio_s_per_s'])} | "
            f"{_fmt(r['tflops'], 2)} | {r['mfu']:.1%} |"
        )
    compiled = report["compile"]
    lines += [
        "",
        f"Compile: backend {compiled.get('backend')}, first steps {compiled.get('first_step_s')}, "
        f"graph breaks {compiled.get('graph_breaks')}, complete {compiled['complete']}.",
        "",
        "## (2) Evaluation (forward, bf16, SDPA, through the evaluation loader)",
        "",
        "| eval batch | clips/s | audio-s/s | MFU |",
        "|---:|---:|---:|---:|",
    ]
    for r in report["evaluation"]["rows"]:
        lines.append(f"| {r['eval_batch']} | {_fmt(r['clips_per_s'])} | {_fmt(r['audio_s_per_s'])} | {r['mfu']:.1%} |")
    lines += [
        "",
        "## (3) Trials sharing the GPU (training stage)",
        "",
        "| trials | aggregate audio-s/s | MFU | busy | peak GiB/trial |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in report["concurrency"]["rows"]:
        lines.append(
            f"| {r['trials']} | {_fmt(r.get('aggregate_audio_s_per_s'))} | {_pct(r.get('mfu'))} | "
            f"{_pct(r.get('busy_fraction'))} | {_fmt(r.get('peak_memory_gib_per_trial'), 2)} |"
        )
    lines += [
        "",
        "## (4, 5) paper_finer trials end to end (epochs scaled; full trial extrapolated)",
        "",
        "| trials | eval every | epoch scale | wall s | setup | features | training | evaluation | final eval"
        " | checkpoints | full trial s (extrap.) | overhead | MFU | busy |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in [*report["paper_trial"]["rows"], *report["packed"]["rows"]]:
        for t in r["per_trial"][:1]:
            lines.append(
                f"| {r['trials']} | {r['eval_every_steps']} | {r['epoch_scale']:.2f} | {_fmt(t['wall_s'])} | "
                f"{_fmt(t['setup_s'])} | {_fmt(t['feature_cache_s'])} | {_fmt(t['training_s'])} | "
                f"{_fmt(t['evaluation_s'])} | {_fmt(t['final_evaluation_s'])} | {_fmt(t['checkpoint_s'])} | "
                f"{_fmt(t['extrapolated_full_trial_s'])} | {_pct(t['overhead_fraction_of_full_trial'])} | "
                f"{_pct(r.get('mfu'))} | {_pct(r.get('busy_fraction'))} |"
            )
    return "\n".join(lines) + "\n"


def _pct(value) -> str:
    return "-" if value is None else f"{value:.0%}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m bench gpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default=os.environ.get("OUT", "bench-gpu-out"), help="folder for gpu.json, gpu.md")
    parser.add_argument("--dry-run", action="store_true", help="every section on the CPU, tiny sizes")
    parser.add_argument("--budget-s", type=float, default=None, help="seconds for all sections (default 300)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="utilisation denominator (default 790)")
    args = parser.parse_args(argv)
    sizes = DRY if args.dry_run else FULL
    if args.budget_s is not None:
        sizes = dataclasses.replace(sizes, budget_s=args.budget_s)
    device = torch.device("cpu" if args.dry_run else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here; use --dry-run for the CPU dry run")
    peak = args.peak_tflops or H200_BF16_PEAK_TFLOPS
    report = run(sizes, Path(args.out), device, peak, argv)
    print(markdown(report))
    return 0
