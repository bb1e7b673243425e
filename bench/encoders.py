"""Encoder families side by side, each figure measured in one run (timings interleaved, best of N).

    python -m bench encoders                        # all three figures (about a minute on 2 CPU cores)
    python -m bench encoders --only lora whisper_padding --repeat 5

1. families: one training step (all_but_cnn, AdamW) per family on equal audio, small configs of
   equal width, depth and frame rate (20 ms), and the step time relative to wav2vec2.
2. lora: LoRA (attention + feed-forward adapters) vs full fine-tuning: step time, trainable
   parameters and the saved checkpoint's size.
3. whisper_padding: Whisper's encoder on the batch's own length vs padded to 30 s as its feature
   extractor does: encoder frames per clip and step time.
CPU timings under load are distorted: read the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from shards.schema import SAMPLE_RATE


def families_measured() -> tuple[str, ...]:
    """Every registered family that declares a benchmark config (Family.bench_config)."""
    from workers.finetune.encoders import FAMILIES

    return tuple(name for name, family in FAMILIES.items() if family.bench_config is not None)


def small_config(model_type: str):
    """Small but real-shaped (the family's Family.bench_config): 20 ms frames, width 256, 4 layers."""
    from workers.finetune.encoders import family_named

    return family_named(model_type).bench_config()


def _clips(batch_size: int, seconds: float) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    audio = (torch.randn(batch_size, int(seconds * SAMPLE_RATE), generator=generator) * 3000).to(torch.int16)
    return audio, torch.full((batch_size,), audio.shape[1])


def _step_fn(model, audio, lengths):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    labels = torch.arange(audio.shape[0]) % 5

    def step():
        loss = torch.nn.functional.cross_entropy(model.classify(audio, lengths), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _interleaved_best(steps: dict, repeat: int) -> dict[str, float]:
    """Best wall time per step function, rounds interleaved so that load hits every one alike."""
    for step in steps.values():
        step()  # warm-up
    best = {name: float("inf") for name in steps}
    for _ in range(repeat):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def _classifier(config_or_path):
    from workers.finetune.model import EmotionClassifier, build_encoder

    torch.manual_seed(0)
    return EmotionClassifier(build_encoder(config_or_path), head_dropout=0.0)


def families(args) -> None:
    from workers.finetune import encoders
    from workers.finetune.model import set_trainable

    audio, lengths = _clips(args.batch_size, args.seconds)
    models, steps = {}, {}
    for family in families_measured():
        model = models[family] = _classifier(small_config(family))
        set_trainable(model, "all_but_cnn")
        steps[family] = _step_fn(model, audio, lengths)
    best = _interleaved_best(steps, args.repeat)
    print(f"  batch {args.batch_size} x {args.seconds:.0f} s, width 256, 4 layers, all_but_cnn, AdamW, CPU")
    print(f"  {'family':16s} {'params M':>9s} {'frames/clip':>12s} {'step ms':>9s} {'vs wav2vec2':>12s}")
    for family, model in models.items():
        with torch.no_grad():
            _, frame_mask = encoders.encode(model.encoder.eval(), audio[:1], lengths[:1])
        params = sum(p.numel() for p in model.parameters()) / 1e6
        ratio = best[family] / best["wav2vec2"]
        print(f"  {family:16s} {params:9.2f} {frame_mask.shape[1]:12d} {best[family] * 1e3:9.0f} {ratio:11.2f}x")


def lora(args) -> None:
    from workers.finetune import encoders
    from workers.finetune.checkpoint import WEIGHTS_FILE, save_model
    from workers.finetune.model import set_trainable

    audio, lengths = _clips(args.batch_size, args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        encoders.family_of(small_config("wav2vec2")).build(small_config("wav2vec2")).save_pretrained(base)
        full = _classifier(str(base))
        set_trainable(full, "all_but_cnn")
        adapted = _classifier(str(base))
        encoders.add_lora(adapted.encoder, rank=args.lora_rank, alpha=2 * args.lora_rank, target="attention_ffn")
        set_trainable(adapted, "lora")
        best = _interleaved_best(
            {"full": _step_fn(full, audio, lengths), "lora": _step_fn(adapted, audio, lengths)}, args.repeat
        )
        sizes = {}
        for name, model in (("full", full), ("lora", adapted)):
            sizes[name] = (save_model(model, Path(tmp) / name) / WEIGHTS_FILE).stat().st_size / 1e6
        trainable = {
            name: sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6
            for name, model in (("full", full), ("lora", adapted))
        }
    print(f"  wav2vec2 width 256, 4 layers; LoRA rank {args.lora_rank} on attention + feed-forward")
    print(f"  {'':6s} {'trainable M':>12s} {'step ms':>9s} {'checkpoint MB':>14s}")
    for name in ("full", "lora"):
        print(f"  {name:6s} {trainable[name]:12.3f} {best[name] * 1e3:9.0f} {sizes[name]:14.2f}")
    print(
        f"  lora/full: step {best['lora'] / best['full']:.2f}x, checkpoint {sizes['lora'] / sizes['full']:.1%}"
        " (adapters + head; the base is reloaded by id)"
    )


def whisper_padding(args) -> None:
    from workers.finetune import encoders
    from workers.finetune.model import set_trainable

    model = _classifier(small_config("whisper"))
    set_trainable(model, "all_but_cnn")
    audio, lengths = _clips(args.batch_size, args.seconds)
    padded = torch.zeros(args.batch_size, 30 * SAMPLE_RATE, dtype=torch.int16)
    padded[:, : audio.shape[1]] = audio
    # What the feature extractor's 30 s padding costs: the encoder runs on 30 s of frames (here masked,
    # so the prediction is the same; in stock transformers the padding is attended to as well).
    inputs = {"own length": (audio, lengths), "30 s padding": (padded, lengths)}
    best = _interleaved_best({name: _step_fn(model, *batch) for name, batch in inputs.items()}, args.repeat)
    print(f"  Whisper width 256, 4 layers; batch {args.batch_size} x {args.seconds:.0f} s clips")
    print(f"  {'':14s} {'frames/clip':>12s} {'step ms':>9s}")
    for name, (batch_audio, batch_lengths) in inputs.items():
        with torch.no_grad():
            states, _ = encoders.encode(model.encoder, batch_audio[:1], batch_lengths[:1])
        print(f"  {name:14s} {states[-1].shape[1]:12d} {best[name] * 1e3:9.0f}")
    print(f"  30 s padding / own length: {best['30 s padding'] / best['own length']:.1f}x step time")


FIGURES = {"families": families, "lora": lora, "whisper_padding": whisper_padding}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench encoders", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", choices=list(FIGURES), default=list(FIGURES))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of every clip")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds (best of)")
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for name in args.only:
        print(f"\n== encoders: {name} ==", flush=True)
        FIGURES[name](args)
    return 0
