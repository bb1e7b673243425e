"""The GPU fast path, measured in one prepared run: `python -m bench gpu --out DIR` (or $OUT).

Runs without Ray or MLflow (the device image has torch, transformers, pyarrow, peft): trials go
through `workers.finetune.recipe.run_trial` with a null logger and an in-memory reporter, and Ray's
fractional GPUs (`--gpus-per-trial 1/N`) are emulated by N trial processes on the one GPU.

    data          an ESD-sized noise corpus (4 English speakers x 1,750 clips of ESD's length
                  distribution, a held-out speaker of 1,750 and a small probe speaker), written
                  through shards.writer.ShardWriter, so trials read real shards        (corpus.py)
    step          (1) step time, audio-s/s and model FLOP utilisation for batch 8/16/32 of bucketed
                  clips: fp32 (TF32) vs bf16 autocast, eager vs SDPA attention, fused vs foreach
                  AdamW, and torch.compile (dynamic shapes) in a child process with a time limit
                                                                                       (step.py)
    evaluation    (2) forward throughput through the evaluation loader at several batch sizes
                                                                                 (evaluation.py)
    concurrency   (3) N = 1, 2, 4, 8 trials at once: aggregate audio-s/s, MFU, peak memory per
                  trial, NVML busy fraction                                (trial_sections.py)
    paper_trial   (4) one `paper_finer` trial end to end, evaluation every 10 steps and raised:
                  wall split into setup, feature cache, training, evaluation, checkpoint writes
    packed        (5) the same with 4 trials packed on the GPU

Trials are timed through the recipe's phases (workers/core/phases.py; trials.py observes them); a
phase the bench expects that a trial never entered stops the run, naming it. Every section has a
share of `--budget-s`; the trial sections shrink the epochs (epoch_scale) to fit and extrapolate a
full trial from the measured split. `--dry-run` runs everything on the CPU with a tiny encoder and a
few clips (same JSON shape). FLOPs are counted as bench/figures.py does (torch's FlopCounterMode
over a real step), against 790 TFLOP/s dense bf16 on an H200.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.figures import H200_BF16_PEAK_TFLOPS
from bench.gpu.corpus import DRY, FULL, Sizes, write_noise_corpus
from bench.gpu.evaluation import evaluation_section
from bench.gpu.measure import GRACE_S, SHARES, Budget, stop_children_at, write_json
from bench.gpu.report import environment, markdown
from bench.gpu.step import compile_section, step_section
from bench.gpu.trial_sections import concurrency_section, paper_trial_section

__all__ = ["DRY", "FULL", "main", "run"]


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

        stop_children_at(budget.deadline + GRACE_S)

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
    write_json(out_dir / "gpu.json", report)
    (out_dir / "gpu.md").write_text(markdown(report))
    return report


def _progress(message: str, started: float, report: dict, out_dir: Path) -> None:
    """Print how far the run is, and save what it has so far: a crash later still leaves the figures."""
    print(f"[bench gpu] {message} ({time.perf_counter() - started:.1f} s)", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "gpu.json", report)


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
