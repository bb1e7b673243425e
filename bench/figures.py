"""The benchmark figures. Each function measures its alternatives in the same run and prints them."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from shards.schema import SAMPLE_RATE

# XLSR-53 fine-tuning cost, counted with torch's FlopCounterMode on the full-size encoder
# (forward + backward, one audio-second): see step_time(), which recounts it every run.
H200_BF16_PEAK_TFLOPS = 790.0
# ESD length statistics (seconds) quoted in the issue: English and Mandarin.
ESD_LENGTHS = {"en": (2.8, 6.7), "zh": (3.2, 8.1)}


def _timed(fn, repeat: int = 3) -> float:
    """Best wall time of `repeat` runs (seconds)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _device(args) -> torch.device:
    if args.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(args.device)


# 1. Loader -----------------------------------------------------------------------------------


def loader_throughput(args) -> None:
    import soundfile as sf

    from orchestrator.paths import ensure_demo_corpus
    from shards.batching import collate, iter_batches
    from shards.reader import ShardReader

    torch.set_num_threads(args.threads)
    reader = ShardReader(ensure_demo_corpus(0, log=lambda *_: None))
    rows = np.arange(len(reader))
    in_memory = [np.array(reader.audio(int(r))) for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        wavs = []
        for r, clip in zip(rows, in_memory):
            path = Path(tmp) / f"{r}.wav"
            sf.write(path, clip, SAMPLE_RATE, subtype="PCM_16")
            wavs.append(path)
        batches = [rows[i : i + 8] for i in range(0, len(rows), 8)]

        def from_memory():
            for b in batches:
                _pad([in_memory[int(r)] for r in b])

        def from_shards():
            for b in batches:
                collate(reader, b)

        def from_wav():
            for b in batches:
                _pad([sf.read(wavs[int(r)], dtype="int16")[0] for r in b])

        def full_loader():
            for _ in iter_batches(reader, rows, 8, np.random.default_rng(0)):
                pass

        timings = {
            "in-memory ceiling": _timed(from_memory),
            "memory-mapped shards": _timed(from_shards),
            "shards, bucketed + shuffled loader": _timed(full_loader),
            "WAV files (soundfile)": _timed(from_wav),
        }
    ceiling = len(rows) / timings["in-memory ceiling"]
    mean_seconds = reader.index.num_samples.sum() / SAMPLE_RATE / len(rows)
    print(f"{len(rows)} clips, {mean_seconds:.2f} s mean, batches of 8, one process")
    for name, seconds in timings.items():
        rate = len(rows) / seconds
        print(f"  {name:36s} {rate:10,.0f} clips/s   {rate / ceiling:5.2f} of ceiling")
    _augmentation_cost(reader, rows)
    _trial_consumption(reader)


def _augmentation_cost(reader, rows: np.ndarray) -> None:
    """The bucketed loader with each augmentation (workers.finetune.augment) on, alone and all together:
    clips/s of the loader's thread, and the time each adds a clip. CPU time of this process (best of 3),
    not wall time: it is what the augmentation takes from the prefetch thread, and it reads the same on a
    machine other jobs share."""
    from shards.batching import collate_planned, plan_batches
    from workers.finetune.augment import Augmenter

    augmentations = {
        "none (the bucketed loader)": None,
        "speed perturbation 0.9/1.0/1.1 (soxr)": Augmenter(speed_perturb=True),
        "coloured noise, SNR 10-30 dB": Augmenter(noise_snr_db=(10, 30)),
        "noise from a shard corpus, 10-30 dB": Augmenter(noise_snr_db=(10, 30), noise_path=str(reader.data_dir)),
        "gain -6..+6 dB": Augmenter(gain_db=(-6, 6)),
        "speed + coloured noise + gain": Augmenter(speed_perturb=True, noise_snr_db=(10, 30), gain_db=(-6, 6)),
    }
    print("  augmentation of training clips, on the same loader (CPU time of the loader thread, per clip):")
    plain = None
    for name, augment in augmentations.items():
        plans = plan_batches(reader.index, rows, 8, np.random.default_rng(0), seed_clips=augment is not None)
        best = float("inf")
        for _ in range(3):
            start = time.process_time()
            for plan in plans:
                collate_planned(reader, plan, 0, augment)
            best = min(best, time.process_time() - start)
        plain = best if plain is None else plain
        added = f"+{(best - plain) / len(rows) * 1e3:6.2f} ms a clip" if augment is not None else ""
        print(f"    {name:38s} {len(rows) / best:10,.0f} clips/s   {added}")


def _pad(clips: list[np.ndarray]) -> np.ndarray:
    out = np.zeros((len(clips), max(len(c) for c in clips)), dtype=np.int16)
    for i, c in enumerate(clips):
        out[i, : len(c)] = c
    return out


def _trial_consumption(reader) -> None:
    """Clips/s one trial eats: measured for the tiny model here, derived for XLSR-53 on an H200."""
    from shards.batching import collate
    from workers.finetune.model import EmotionClassifier, build_encoder, normalize_audio

    model = EmotionClassifier(build_encoder("tiny"))
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    batch = collate(reader, np.arange(8))

    def step():
        values, mask = normalize_audio(torch.from_numpy(batch.audio), torch.from_numpy(batch.lengths))
        loss = model.classify_waveform(values, attention_mask=mask).logsumexp(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()
    tiny_rate = 8 / _timed(step, repeat=5)
    mean_seconds = ESD_LENGTHS["en"][0]
    xlsr_rate = H200_BF16_PEAK_TFLOPS * 1e12 * 0.4 / (110e9 * mean_seconds)
    print(
        f"  one trial consumes: tiny model on this CPU {tiny_rate:,.0f} clips/s; "
        f"XLSR-53 on an H200 at 40% MFU ~{xlsr_rate:,.0f} clips/s (ESD mean {mean_seconds} s)"
    )


# 2. Padding ----------------------------------------------------------------------------------


def esd_like_lengths(mean_s: float, max_s: float, count: int, rng: np.random.Generator) -> np.ndarray:
    """Gamma-distributed clip lengths (shape 6) with ESD's mean, clipped at ESD's max."""
    shape = 6.0
    lengths = rng.gamma(shape, mean_s / shape, size=count)
    return np.clip(lengths, 0.8, max_s)


def padding_fraction(args) -> None:
    from shards.batching import bucket_batches

    rng = np.random.default_rng(0)
    for language, (mean_s, max_s) in ESD_LENGTHS.items():
        # 4 speakers x 1750 clips (one speaker-held-out training set of the paper)
        seconds = esd_like_lengths(mean_s, max_s, 7000, rng)
        frames = (seconds * 50).astype(int)  # wav2vec2: 50 frames a second
        for batch_size in (8, 32):
            shuffled = [p for p in np.array_split(rng.permutation(len(frames)), len(frames) // batch_size)]
            bucketed = bucket_batches(frames, batch_size, rng)
            print(
                f"  {language} (mean {seconds.mean():.1f} s, max {seconds.max():.1f} s) batch {batch_size:2d}: "
                f"padded frames {_padded(frames, shuffled):6.1%} shuffled -> {_padded(frames, bucketed):5.1%} bucketed"
            )


def _padded(frames: np.ndarray, batches: list[np.ndarray]) -> float:
    total = sum(len(b) * frames[b].max() for b in batches)
    return 1.0 - frames.sum() / total


# 3. Step time and FLOP utilisation --------------------------------------------------------------


def step_time(args) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from workers.finetune.model import (
        EmotionClassifier,
        build_encoder,
        normalize_audio,
        set_trainable,
        xlsr53_encoder_config,
    )

    device = _device(args)
    torch.set_num_threads(args.threads)
    config = xlsr53_encoder_config()
    model = EmotionClassifier(build_encoder(config)).to(device)
    set_trainable(model, "all_but_cnn")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    batch_size, seconds = (8, 3.0) if device.type == "cuda" else (1, 1.0)
    audio = (torch.randn(batch_size, int(seconds * SAMPLE_RATE)) * 3000).to(torch.int16).to(device)
    lengths = torch.full((batch_size,), audio.shape[1], device=device)

    def step():
        values, mask = normalize_audio(audio, lengths)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model.classify_waveform(values, attention_mask=mask).float()
        loss = logits.logsumexp(-1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    step()  # warm-up
    step_seconds = _timed(step, repeat=3 if device.type == "cuda" else 1)
    peak = args.peak_tflops or (H200_BF16_PEAK_TFLOPS if device.type == "cuda" else _cpu_peak_tflops())
    achieved = flops / step_seconds / 1e12
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"  XLSR-53-sized encoder ({params:.0f} M params) on {device}: batch {batch_size} x {seconds:.0f} s")
    flops_per_audio_second = flops / (batch_size * seconds)
    print(
        f"  {flops_per_audio_second / 1e9:.0f} GFLOP per audio-second (fwd+bwd, counted; frozen CNN: no weight grads)"
    )
    print(
        f"  step {step_seconds * 1e3:,.0f} ms -> {achieved:.2f} TFLOP/s = {achieved / peak:.0%} of {peak:.2f} TFLOP/s"
    )
    paper_epoch_flops = 5.4 * 3600 * flops_per_audio_second  # 5.4 h of English training audio
    print(
        f"  a paper-scale epoch (5.4 h of audio) at this rate: {paper_epoch_flops / (achieved * 1e12) / 3600:,.1f} h"
        f"; on an H200 at 100% of peak: {paper_epoch_flops / (H200_BF16_PEAK_TFLOPS * 1e12):.1f} s"
    )


def _cpu_peak_tflops() -> float:
    """What this CPU reaches on a large fp32 matmul: the practical ceiling for utilisation here."""
    a = torch.randn(2048, 2048)
    b = torch.randn(2048, 2048)
    seconds = _timed(lambda: a @ b, repeat=5)
    return 2 * 2048**3 / seconds / 1e12


# 4. Sweep with and without the frozen-stage cache ---------------------------------------------


def frozen_cache_sweep(args) -> None:
    from orchestrator.paths import ensure_demo_corpus
    from workers.core.reporting import ListReporter
    from workers.core.tracking import NullLogger
    from workers.finetune.config import TrialConfig
    from workers.finetune.recipe import run_trial

    if "cache_frozen_features" not in TrialConfig.field_names():
        print("  (this build has no frozen-stage cache: nothing to compare)")
        return
    torch.set_num_threads(args.threads)
    data_dir = ensure_demo_corpus(0, log=lambda *_: None)
    learning_rates = (3e-4, 1e-3, 3e-3)
    with tempfile.TemporaryDirectory() as cache_dir:
        for cached in (False, True):
            started = time.perf_counter()
            accuracies = []
            for lr in learning_rates:
                config = TrialConfig(
                    data_dir=str(data_dir),
                    schedule="head_only",
                    learning_rate=lr,
                    epoch_scale=2.0,
                    cache_frozen_features=cached,
                    feature_cache_dir=cache_dir,
                    eval_sets={"test_en": ("0015",)},
                )
                metrics = run_trial(config, NullLogger(), ListReporter())
                accuracies.append(metrics["val/accuracy"])
            wall = time.perf_counter() - started
            label = "with frozen-stage cache" if cached else "without cache"
            print(
                f"  {len(learning_rates)} head-only trials (4 epochs each), {label:24s}: {wall:6.1f} s "
                f"(val accuracy {', '.join(f'{a:.2f}' for a in accuracies)})"
            )


# 5. Shard integrity --------------------------------------------------------------------------

# ESD: 35,000 clips x ~3 s x 16 kHz x 2 bytes (int16) = 3.36 GB of shards.
ESD_SHARD_BYTES = 35_000 * 3 * SAMPLE_RATE * 2


def shard_integrity(args) -> None:
    """What checking shards against their manifest costs: hashing once per node and shard version, then a
    stat per shard on every later open. Measured on `--integrity-mb` MB of shards, extrapolated to ESD."""
    import json
    import os
    import shutil

    from shards import integrity
    from shards.writer import MANIFEST_NAME, file_sha256

    num_shards, shard_mb = 8, max(1, args.integrity_mb // 8)
    with tempfile.TemporaryDirectory() as scratch:
        data_dir, cache = Path(scratch) / "shards", Path(scratch) / "cache"
        data_dir.mkdir()
        entries = []
        for number in range(num_shards):
            path = data_dir / f"shard-{number:05d}.arrow"
            path.write_bytes(os.urandom(shard_mb << 20))
            entries.append({"path": path.name, "sha256": file_sha256(path), "num_bytes": path.stat().st_size})
        (data_dir / MANIFEST_NAME).write_text(json.dumps({"shards": entries}))
        total_mb = num_shards * shard_mb
        previous_cache = os.environ.get("EMOTION_SWEEP_CACHE")
        os.environ["EMOTION_SWEEP_CACHE"] = str(cache)  # markers of this run only

        def first_open() -> None:
            shutil.rmtree(cache, ignore_errors=True)
            integrity.verify_shards_once(data_dir)

        try:
            first = _timed(first_open, repeat=2)
            marked = _timed(lambda: integrity.verify_shards_once(data_dir), repeat=5)
        finally:
            os.environ.pop("EMOTION_SWEEP_CACHE")
            if previous_cache is not None:
                os.environ["EMOTION_SWEEP_CACHE"] = previous_cache
    throughput = total_mb / first
    esd_s = ESD_SHARD_BYTES / (1 << 20) / throughput
    print(f"  measured on {total_mb} MB in {num_shards} shards (page cache warm: hashing speed, not disk speed)")
    print(f"  first open (sha256 of every shard):    {first:8.3f} s   {throughput:7.0f} MB/s")
    print(f"  later opens (markers: a stat a shard):  {marked * 1000:8.2f} ms  ({first / marked:,.0f}x cheaper)")
    print(
        f"  ESD-sized corpus ({ESD_SHARD_BYTES / 1e9:.2f} GB), EXTRAPOLATED at {throughput:.0f} MB/s: "
        f"~{esd_s:.0f} s once per node and shard version (more if the shards come cold from disk/EFS)"
    )
