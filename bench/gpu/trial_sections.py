"""(3) trials sharing the GPU, (4) one paper_finer trial end to end, (5) several packed: each section's
configurations, and a trial's wall split with a full trial extrapolated from the scaled one."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch

from bench.figures import ESD_LENGTHS
from bench.gpu.corpus import PROBE_SPEAKER, TEST_SPEAKER, Sizes
from bench.gpu.trials import EXPECTED, aggregate, run_trials, trial_config
from workers.core.phases import Phase


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
            # A head-only first stage (cache on, whole clips) fills the feature cache; rounds come every 10 steps
            # (a raised interval may outlast a dry run's scaled epochs).
            expect = (*EXPECTED, Phase.FEATURE_CACHE, *((Phase.EVALUATION_ROUND,) if eval_every == 10 else ()))
            results, busy = run_trials(configs, device, max(share, 60.0, sizes.min_child_timeout_s), expect)
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
