"""Paper-size encoders on this machine: each family at its real size, randomly initialised from the real
architecture (no download), one training step per freeze stage on the CPU.

    python -m bench scale                              # every family, every stage (long on 2 cores)
    python -m bench scale --families xlsr53 --stages all_but_cnn --json scale.json

Per family: parameters (the bare encoder, as this project loads it: no CTC or pretraining head, Whisper
without its decoder) beside the published figure; per stage: step time, peak resident memory of a
fresh process doing the step, and the same with gradient checkpointing where a stage trains the
transformer; and the size of a saved checkpoint (full weights, and LoRA adapters + head).
Each measurement runs in its own process, so one peak is not another's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Published sizes, for comparison (the papers' tables count the encoder as pretrained; rounded).
PUBLISHED = {
    "xlsr53": "317M (wav2vec 2.0 / XLSR Large, Conneau et al. 2020)",
    "hubert_large": "317M (HuBERT Large, Hsu et al. 2021)",
    "wavlm_large": "317M (WavLM Large, Chen et al. 2022)",
    "data2vec_large": "313M (data2vec Large, Baevski et al. 2022)",
    "whisper_large_v3_encoder": "~635M of 1550M (Whisper large-v3; encoder share)",
}
STAGES = ("head", "transformer", "all_but_cnn", "all", "lora")
TRAINS_TRANSFORMER = {"transformer", "all_but_cnn", "all", "lora"}
CLIP_SECONDS = 4.0
NUM_CLIPS = 2


def real_size_config(family: str):
    """The architecture of each family's large checkpoint (values of its published config.json)."""
    from transformers import Data2VecAudioConfig, HubertConfig, WavLMConfig, WhisperConfig

    from workers.finetune.model import xlsr53_encoder_config

    large = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
    stable = dict(feat_extract_norm="layer", do_stable_layer_norm=True, feat_extract_activation="gelu")
    if family == "xlsr53":
        return xlsr53_encoder_config()
    if family == "hubert_large":
        return HubertConfig(**large, **stable, conv_bias=True, layer_norm_eps=1e-5)
    if family == "wavlm_large":
        return WavLMConfig(**large, **stable, conv_bias=False, num_buckets=320, max_bucket_distance=800)
    if family == "data2vec_large":
        return Data2VecAudioConfig(**large, conv_bias=True, num_conv_pos_embeddings=5, conv_pos_kernel_size=19)
    if family == "whisper_large_v3_encoder":
        return WhisperConfig(
            d_model=1280,
            encoder_layers=32,
            encoder_attention_heads=20,
            encoder_ffn_dim=5120,
            decoder_layers=1,  # the decoder is never built (workers.finetune.encoders: the bare encoder)
            num_mel_bins=128,
            max_source_positions=1500,
            vocab_size=51866,
        )
    raise ValueError(f"unknown family {family!r}; choose from {', '.join(PUBLISHED)}")


def measure_step(family: str, stage: str, checkpointing: bool) -> dict:
    """In this process: build the model, run one training step of `stage` on 2 clips of 4 s, return figures."""
    import torch

    from workers.finetune.encoders import add_lora
    from workers.finetune.model import EmotionClassifier, build_encoder, set_trainable
    from workers.finetune.recipe import enable_gradient_checkpointing

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    built = time.perf_counter()
    encoder = build_encoder(real_size_config(family))
    if stage == "lora":
        add_lora(encoder, rank=8, alpha=16.0, target="attention")
    model = EmotionClassifier(encoder).train()
    set_trainable(model, stage)
    if checkpointing:
        enable_gradient_checkpointing(model)
    build_seconds = time.perf_counter() - built
    samples = int(CLIP_SECONDS * 16000)
    audio = (torch.randn(NUM_CLIPS, samples) * 3000).clamp(-32768, 32767).to(torch.int16)
    lengths = torch.tensor([samples, samples * 3 // 4])
    labels = torch.tensor([0, 1])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(model.classify(audio, lengths), labels)
    loss.backward()
    optimizer.step()
    step_seconds = time.perf_counter() - started
    return {
        "family": family,
        "stage": stage,
        "gradient_checkpointing": checkpointing,
        "encoder_parameters": sum(p.numel() for n, p in model.encoder.named_parameters() if "lora_" not in n),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "build_seconds": round(build_seconds, 2),
        "step_seconds": round(step_seconds, 2),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "rss_before_step_gb": round(rss_before / 2**20, 2),
    }


def checkpoint_sizes(family: str) -> dict:
    """Bytes of a saved model: full weights, and LoRA adapters + head over an unchanged hub base."""
    import torch

    from workers.finetune.checkpoint import save_model
    from workers.finetune.encoders import add_lora
    from workers.finetune.model import EmotionClassifier, build_encoder

    torch.manual_seed(0)
    model = EmotionClassifier(build_encoder(real_size_config(family)))
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        save_model(model, Path(tmp) / "full")
        sizes["full_mb"] = round((Path(tmp) / "full" / "model.safetensors").stat().st_size / 1e6, 1)
    add_lora(model.encoder, rank=8, alpha=16.0, target="attention")
    model.encoder.pretrained_source = {"source": f"hub/{family}", "revision": "main"}  # saved as adapters only
    with tempfile.TemporaryDirectory() as tmp:
        save_model(model, Path(tmp) / "lora")
        sizes["lora_mb"] = round((Path(tmp) / "lora" / "model.safetensors").stat().st_size / 1e6, 2)
    return sizes


def in_fresh_process(args: list[str]) -> dict:
    """One measurement in a child process (its own peak memory); its JSON line."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-m", "bench.scale", "--child", *args], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench scale {' '.join(args)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(families: list[str], stages: list[str]) -> dict:
    rows, sizes = [], {}
    for family in families:
        sizes[family] = in_fresh_process(["sizes", family])
        for stage in stages:
            for checkpointing in (False, True) if stage in TRAINS_TRANSFORMER else (False,):
                row = in_fresh_process(["step", family, stage, str(int(checkpointing))])
                rows.append(row)
                print(format_row(row), flush=True)
    return {"clips": NUM_CLIPS, "clip_seconds": CLIP_SECONDS, "steps": rows, "checkpoints": sizes}


def format_row(row: dict) -> str:
    checkpointing = "on " if row["gradient_checkpointing"] else "off"
    return (
        f"{row['family']:<26} {row['stage']:<12} ckpt {checkpointing}  params {row['encoder_parameters'] / 1e6:7.1f}M "
        f"trainable {row['trainable_parameters'] / 1e6:7.1f}M  step {row['step_seconds']:6.1f} s  "
        f"peak {row['peak_rss_gb']:5.1f} GB"
    )


def print_table(result: dict) -> None:
    print(
        f"\nOne training step on {result['clips']} clips of {result['clip_seconds']:.0f} s (CPU, fresh process each):"
    )
    print("| family | parameters | published | stage | grad. ckpt | step s | peak RSS GB |")
    print("|---|---|---|---|---|---|---|")
    for row in result["steps"]:
        print(
            f"| {row['family']} | {row['encoder_parameters'] / 1e6:.1f}M | {PUBLISHED[row['family']]} | {row['stage']} "
            f"| {'on' if row['gradient_checkpointing'] else 'off'} | {row['step_seconds']:.1f} "
            f"| {row['peak_rss_gb']:.1f} |"
        )
    print("\n| family | checkpoint, full (MB) | LoRA r=8 adapters + head (MB) |")
    print("|---|---|---|")
    for family, size in result["checkpoints"].items():
        print(f"| {family} | {size['full_mb']} | {size['lora_mb']} |")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        kind, family, *rest = argv[1:]
        row = checkpoint_sizes(family) if kind == "sizes" else measure_step(family, rest[0], rest[1] == "1")
        print(json.dumps(row))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench scale", description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(PUBLISHED), choices=list(PUBLISHED))
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    result = run(args.families, args.stages)
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
