"""LoRA adapters (peft) on an encoder's attention (and optionally feed-forward) projections, in every family."""

from __future__ import annotations

from torch import nn

from workers.finetune.config import LORA_TARGETS
from workers.finetune.encoders.registry import family_of


def lora_parameters(module: nn.Module) -> list[nn.Parameter]:
    return [p for name, p in module.named_parameters() if "lora_" in name]


def has_lora(module: nn.Module) -> bool:
    return any("lora_" in name for name, _ in module.named_parameters())


def lora_target_modules(config, target: str) -> list[str]:
    family = family_of(config)
    if target not in LORA_TARGETS:
        raise ValueError(f"unknown lora_target {target!r}; choose one of {LORA_TARGETS}")
    return list(family.attention + (family.feed_forward if target == "attention_ffn" else ()))


def add_lora(encoder: nn.Module, rank: int, alpha: float, target: str) -> nn.Module:
    """Inject peft LoRA adapters into the encoder's projections (in place); adapters start as a no-op."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=lora_target_modules(encoder.config, target)
    )
    inject_adapter_in_model(config, encoder)
    encoder.lora_settings = {"rank": rank, "alpha": alpha, "target": target}
    return encoder
