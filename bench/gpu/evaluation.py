"""(2) Evaluation: forward-only throughput through the evaluation loader at several batch sizes."""

from __future__ import annotations

import time

import torch

from bench.gpu.corpus import TEST_SPEAKER, Sizes
from bench.gpu.measure import autocast, release, sync
from bench.gpu.step import audio_seconds, build_classifier
from shards.schema import SAMPLE_RATE


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
                torch.softmax(model.classify_waveform(values, attention_mask=mask).float(), dim=-1)
        sync(device)

    probe = next(iter(audio_eval_batches(reader, rows_test[:8], 8, False, 0))).to(device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        values, mask = normalize_audio(probe.audio, probe.lengths)
        model.classify_waveform(values, attention_mask=mask)
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
