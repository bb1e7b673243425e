"""A trial's final model as it leaves the machine: an MLflow Model that loads anywhere.

A LoRA model's checkpoint holds adapters, pooler and head, and names its base (a hub id, or a
directory on the training machine): it loads only where that base does. The logged MLflow Model
`model/` therefore holds the adapters merged into the base (a plain encoder: no base to find, no peft
at serving time), and the adapters travel beside it as their own small artifact `lora_adapters/`,
whose config names the base by id and, for a hub base, the commit it resolved to.
Tune's checkpoint keeps the adapters form (a resumed or `init_from` trial trains them on).
"""

from __future__ import annotations

import copy
from pathlib import Path

from workers.core.tracking import RunLogger
from workers.finetune import encoders
from workers.finetune.checkpoint import lora_base_of, save_model
from workers.finetune.hub.card import CardFacts, write_model_card
from workers.finetune.model import CONFIG_STARTS, EmotionClassifier, resolve_start
from workers.vocabulary import Key


def log_trained_model(
    logger: RunLogger,
    model: EmotionClassifier,
    model_dir: Path,
    scratch: Path,
    card: CardFacts | None = None,
    metrics: dict[str, float] | None = None,
    step: int | None = None,
    model_step: int = 0,
) -> None:
    """Log `model` (saved in `model_dir`) as the run's MLflow Model with its model card (when given) and its
    final `metrics` linked to it (RunLogger.log_model); a LoRA model merged, its adapters beside it."""
    logged_dir = model_dir
    if encoders.has_lora(model.encoder):
        logged_dir = save_model(merged_copy(model), scratch / "merged")
    if card is not None:
        write_model_card(logged_dir, card)
    logger.log_model(str(logged_dir), metrics, step=step, model_step=model_step)
    if logged_dir != model_dir and lora_base_of(model) is not None:
        # model_dir holds the adapters alone (a full save is the merged model)
        logger.log_artifacts(str(model_dir), Key.LORA_ADAPTERS_DIR)


def merged_copy(model: EmotionClassifier) -> EmotionClassifier:
    """A CPU copy of a LoRA model with every adapter merged into the weight it adapts, and no peft layers left."""
    from peft.tuners.lora import LoraLayer

    merged = copy.deepcopy(model).cpu().eval()
    for name, module in list(merged.encoder.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()  # W += B A * alpha / r
            parent, _, child = name.rpartition(".")
            setattr(merged.encoder.get_submodule(parent), child, module.get_base_layer())
    if encoders.has_lora(merged.encoder):
        raise RuntimeError("LoRA parameters left after merging the adapters")
    return merged


def card_facts(trial, final: dict[str, float]) -> CardFacts:
    """What the model card says about a finished trial (a workers.finetune.recipe.TrainingContext)."""
    cfg = trial.cfg
    source = resolve_start(cfg.start)
    local_or_random = cfg.start in CONFIG_STARTS or Path(source).exists()
    manifest_source = trial.data.reader.manifest.get("source", {})
    corpus = Path(cfg.data_dir).name + (f" ({manifest_source['kind']})" if manifest_source.get("kind") else "")
    return CardFacts(
        start=cfg.init_from or source,
        labels=tuple(trial.model.labels),
        corpus=corpus,
        train_speakers=tuple(cfg.train_speakers),
        eval_sets={name: tuple(speakers) for name, speakers in cfg.eval_sets.items()},
        metrics=final,
        config=cfg.to_dict(),
        base_model="" if local_or_random or cfg.init_from else source,
    )
