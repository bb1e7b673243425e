"""(1) The training step: eager grid (batch x precision x attention), fused vs foreach AdamW, and
torch.compile in a child process with a time limit; FLOPs counted by torch over a real step."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.gpu.corpus import TRAIN_SPEAKERS, Sizes
from bench.gpu.measure import autocast, read_json, release, run_children, sync, write_json
from shards.schema import SAMPLE_RATE


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
        logits = model.classify_waveform(values, attention_mask=mask).float()
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
        write_json(result_path, {"rows": rows, "first_step_s": first_step_s})
    counters = torch._dynamo.utils.counters
    result = {
        "rows": rows,
        "first_step_s": first_step_s,
        "backend": sizes.compile_backend,
        "graph_breaks": int(sum(counters["graph_break"].values())),
        "unique_graphs": int(counters["stats"]["unique_graphs"]),
    }
    write_json(result_path, result)


def compile_section(sizes: Sizes, data_dir: Path, device: torch.device, step: dict, peak: float, slot_s: float) -> dict:
    """(1, continued) compile in a child with a time limit: a slow compile cannot sink the run."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result_path = str(Path(tmp) / "compile.json")
        args = (dataclasses.asdict(sizes), str(data_dir), str(device), peak, result_path)
        exit_codes = run_children(compile_worker, [args], timeout_s=max(slot_s, sizes.min_child_timeout_s))
        result = read_json(result_path) or {"rows": []}
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
