"""The run's environment and its Markdown table (gpu.md)."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess

import torch

from bench.gpu.measure import has_module


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
        "nvml": has_module("pynvml"),
        "matplotlib": has_module("matplotlib"),
        "sklearn": has_module("sklearn"),  # trials need none: workers.core.metrics is numpy
    }


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
