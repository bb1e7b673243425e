"""Freeze parts, the same in every family: head, transformer, all_but_cnn, all, lora (workers.finetune.config)."""

from __future__ import annotations

from torch import nn

from workers.finetune.encoders.lora import has_lora, lora_parameters
from workers.finetune.encoders.registry import family_of


def _modules(encoder: nn.Module, names: tuple[str, ...]) -> list[nn.Module]:
    return [getattr(encoder, name) for name in names]


def frontend_modules(encoder: nn.Module) -> list[nn.Module]:
    """The conv front end: wav2vec2-style CNN feature encoder, or Whisper's two conv layers."""
    return _modules(encoder, family_of(encoder.config).frontend)


def transformer_modules(encoder: nn.Module) -> list[nn.Module]:
    return _modules(encoder, family_of(encoder.config).transformer)


def unfreeze_encoder_part(encoder: nn.Module, part: str) -> None:
    """Turn on gradients for `part` of an encoder whose parameters are all frozen.

    head: nothing; transformer: the transformer stack; all_but_cnn: everything but the conv front end;
    all: everything; lora: only the LoRA adapters. LoRA base weights stay frozen in every part but
    `all_but_cnn` / `all`, which train them as in a full fine-tune.
    Frozen parts build no autograd graph: modules that would force grad at their input follow their
    parameters (sync_requires_grad).
    """
    family = family_of(encoder.config)
    if part == "transformer":
        for module in transformer_modules(encoder):
            module.requires_grad_(True)
    elif part in ("all_but_cnn", "all"):
        encoder.requires_grad_(True)
        if part == "all_but_cnn":
            for module in frontend_modules(encoder):
                module.requires_grad_(False)
    elif part == "lora":
        if not has_lora(encoder):
            raise ValueError(
                "a 'lora' stage needs LoRA adapters in the encoder: build it with workers.finetune.encoders.add_lora"
            )
        for parameter in lora_parameters(encoder):
            parameter.requires_grad_(True)
    for module in _modules(encoder, family.always_frozen):
        module.requires_grad_(False)
    if part in ("transformer", "all_but_cnn", "all") and has_lora(encoder):
        for parameter in lora_parameters(encoder):
            parameter.requires_grad_(True)
    sync_requires_grad(encoder)


def sync_requires_grad(encoder: nn.Module) -> None:
    """HF's wav2vec2-style feature encoders mark their input as requiring grad while their `_requires_grad`
    flag is set (`freeze_feature_encoder()` clears it), so a frozen front end would still build (and run
    backward through) its whole graph: the flag follows the module's parameters."""
    for module in encoder.modules():
        if hasattr(module, "_requires_grad"):
            module._requires_grad = any(p.requires_grad for p in module.parameters())
