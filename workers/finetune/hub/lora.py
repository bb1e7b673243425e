"""LoRA adapters folded into the weights they adapt, so a model needs neither peft nor its base checkpoint."""

from __future__ import annotations

from torch import nn


def merge_lora(model: nn.Module) -> int:
    """Merge every peft LoRA layer of `model` into its base layer and put the base layer in its place
    (in place); the number of layers merged. The config then describes a plain encoder."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # no peft: no adapters to merge
        return 0
    merged = 0
    for name, module in list(model.named_modules()):
        if not isinstance(module, LoraLayer):
            continue
        module.merge()
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, module.get_base_layer())
        merged += 1
    if merged and hasattr(model, "config"):
        model.config.lora = None
    encoder = getattr(model, "encoder", None)
    if merged and encoder is not None and hasattr(encoder, "lora_settings"):
        del encoder.lora_settings
    return merged
