"""The benchmark's corpus and sizes: an ESD-sized noise corpus written through the project's shard writer."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.figures import ESD_LENGTHS, esd_like_lengths
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
    batch_sizes=(2,),  # one of each: the dry run checks every section runs, the H200 run measures sizes
    eval_batch_sizes=(4,),
    batches_per_combo=2,
    repeats=1,
    concurrency=(2,),
    packed=2,
    raised_eval_every=50,
    budget_s=3600.0,  # nothing is skipped for time in a dry run, however loaded the machine
    compile_backend="eager",
    min_child_timeout_s=300.0,
    max_concurrency_steps=24,
    max_epoch_scale=0.5,
    threads=1,
)


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
