"""The fine-tuning recipe: setup, train through the freeze schedule, evaluate on held-out speakers.

Reads top to bottom: `run_trial` is the whole story; helpers below it are one step each.
"""
from __future__ import annotations

import copy
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from shards.batching import Batch, holdout, iter_batches, mix_languages
from shards.reader import ShardReader
from shards.schema import SAMPLE_RATE
from workers.checkpoint import load_model, save_model
from workers.config import Stage, TrialConfig
from workers.metrics import classification_metrics, confusion, confusion_figure, report_text
from workers.model import EmotionClassifier, build_encoder, normalize_audio, set_trainable
from workers.reporting import Reporter
from workers.tracking import RunLogger


@dataclass
class TrialData:
    reader: ShardReader
    train_rows: np.ndarray
    eval_rows: dict[str, np.ndarray]  # 'val' (held-out clips of training speakers) + the plan's sets


@dataclass
class TrainState:
    """What the adaptive learning rate and early stopping remember between evaluation rounds."""

    step: int = 0
    epoch: int = 0
    lr_scale: float = 1.0
    last_val_loss: float = float("inf")
    last_val_accuracy: float = 0.0
    rounds_rising: int = 0
    rounds_since_best: int = 0
    best_val_loss: float = float("inf")
    best_state: dict | None = None
    stopped_early: bool = False
    train_losses: list[float] = field(default_factory=list)


def run_trial(cfg: TrialConfig, logger: RunLogger, reporter: Reporter,
              device: torch.device | None = None,
              shard_rows: Callable[[np.ndarray], np.ndarray] | None = None) -> dict[str, float]:
    """Train one configuration and return its final metrics (also logged and reported).

    `shard_rows`: this process's share of the training rows, when one trial runs data-parallel
    over several processes (workers/distributed.py); None: all of them.
    """
    started = time.perf_counter()
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(max(1, cfg.num_threads))
    torch.manual_seed(cfg.seed)
    data = load_trial_data(cfg)
    if shard_rows is not None:
        data.train_rows = shard_rows(data.train_rows)
    model = build_model(cfg).to(device)
    logger.log_params(cfg.to_dict())
    logger.set_tags({"data_hash": data.reader.content_hash, "train_speakers": ",".join(cfg.train_speakers)})

    state = TrainState()
    rng = np.random.default_rng(cfg.seed)
    stages = cfg.stage_list()
    for stage_number, stage in enumerate(stages):
        train_stage(model, data, cfg, stage, state, rng, device, logger, reporter,
                    is_last_stage=stage_number == len(stages) - 1)
        if state.stopped_early:
            break

    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    final = evaluate_all(model, data, cfg, device, logger)
    final.update({"epoch": state.epoch, "step": state.step, "trial_seconds": time.perf_counter() - started})
    logger.log_metrics(final, step=state.step)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_model(model, Path(tmp) / "model", cfg.head_dropout)
        logger.log_artifacts(str(model_dir), "model")
        reporter.report(final, checkpoint_dir=model_dir)
    return final


def build_model(cfg: TrialConfig) -> EmotionClassifier:
    """The start encoder with a fresh head, or a saved emotion model (`init_from`) as it was."""
    if cfg.init_from:
        return load_model(cfg.init_from)
    return EmotionClassifier(build_encoder(cfg.start), head_dropout=cfg.head_dropout)


def load_trial_data(cfg: TrialConfig) -> TrialData:
    reader = ShardReader(cfg.data_dir)
    known = set(reader.index.speaker)
    for speaker in (*cfg.train_speakers, *(s for group in cfg.eval_sets.values() for s in group)):
        if speaker not in known:
            raise ValueError(f"speaker {speaker} is not in {cfg.data_dir}; it has {sorted(known)}")
    train_rows, val_rows = holdout(reader.index, reader.index.select(cfg.train_speakers), cfg.val_fraction, cfg.seed)
    eval_rows = {"val": val_rows} if len(val_rows) else {}
    eval_rows.update({name: reader.index.select(speakers) for name, speakers in cfg.eval_sets.items()})
    return TrialData(reader, train_rows, eval_rows)


def train_stage(model: EmotionClassifier, data: TrialData, cfg: TrialConfig, stage: Stage, state: TrainState,
                rng: np.random.Generator, device: torch.device, logger: RunLogger, reporter: Reporter,
                is_last_stage: bool) -> None:
    """Train one stage of the freeze schedule; report to Tune after every epoch."""
    set_trainable(model, stage.trainable)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=stage.learning_rate)
    batches_per_epoch = -(-len(data.train_rows) // stage.batch_size)
    steps_left = max(1, round(stage.epochs * batches_per_epoch))
    max_samples = int(cfg.max_seconds * SAMPLE_RATE)
    while steps_left > 0 and not state.stopped_early:
        epoch_rows = mix_languages(data.reader.index, data.train_rows, cfg.english_fraction, rng)
        for batch in iter_batches(data.reader, epoch_rows, stage.batch_size, rng, max_samples):
            for group in optimizer.param_groups:
                group["lr"] = stage.learning_rate * state.lr_scale
            state.train_losses.append(train_step(model, optimizer, batch, device))
            state.step += 1
            steps_left -= 1
            if state.step % cfg.eval_every_steps == 0:
                evaluation_round(model, data, cfg, state, device, logger, stage.learning_rate)
            if steps_left == 0 or state.stopped_early:
                break
        state.epoch += 1
        if not (is_last_stage and (steps_left == 0 or state.stopped_early)):
            # The final report (with test metrics) comes from run_trial after the best state is restored.
            reporter.report({"epoch": state.epoch, "step": state.step,
                             "val/loss": state.last_val_loss, "val/accuracy": state.last_val_accuracy})


def train_step(model: EmotionClassifier, optimizer: torch.optim.Optimizer, batch: Batch, device: torch.device) -> float:
    model.train()
    logits = forward(model, batch, device)
    loss = nn.functional.cross_entropy(logits, torch.as_tensor(batch.labels, device=device))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    optimizer.step()
    return float(loss.detach())


def forward(model: EmotionClassifier, batch: Batch, device: torch.device) -> torch.Tensor:
    audio = torch.from_numpy(batch.audio).to(device, non_blocking=True)
    lengths = torch.from_numpy(batch.lengths).to(device, non_blocking=True)
    values, mask = normalize_audio(audio, lengths)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        return model(values, attention_mask=mask).float()


def evaluation_round(model: EmotionClassifier, data: TrialData, cfg: TrialConfig, state: TrainState,
                     device: torch.device, logger: RunLogger, stage_learning_rate: float) -> None:
    """The paper's adaptive learning rate: x0.1 once val loss has risen more than `patience` rounds."""
    if "val" not in data.eval_rows:
        return
    val_loss, y_true, y_pred = predict(model, data, data.eval_rows["val"], device)
    state.rounds_rising = state.rounds_rising + 1 if val_loss > state.last_val_loss else 0
    state.last_val_loss = val_loss
    state.last_val_accuracy = float(np.mean(y_true == y_pred))
    if state.rounds_rising > cfg.lr_decay_patience:
        state.lr_scale *= cfg.lr_decay_factor
        state.rounds_rising = 0
    if val_loss < state.best_val_loss:
        state.best_val_loss = val_loss
        state.best_state = copy.deepcopy(model.state_dict())
        state.rounds_since_best = 0
    else:
        state.rounds_since_best += 1
        state.stopped_early = 0 < cfg.early_stop_patience < state.rounds_since_best
    logger.log_metrics(
        {
            "train/loss": float(np.mean(state.train_losses)) if state.train_losses else float("nan"),
            "train/lr": stage_learning_rate * state.lr_scale,
            "val/loss": val_loss,
            "val/accuracy": state.last_val_accuracy,
        },
        step=state.step,
    )
    state.train_losses.clear()


@torch.no_grad()
def predict(model: EmotionClassifier, data: TrialData, rows: np.ndarray, device: torch.device,
            batch_size: int = 16) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean loss, true labels and predicted labels over `rows`."""
    model.eval()
    losses, y_true, y_pred = [], [], []
    for batch in iter_batches(data.reader, rows, batch_size):
        logits = forward(model, batch, device)
        labels = torch.as_tensor(batch.labels, device=device)
        losses.append(float(nn.functional.cross_entropy(logits, labels, reduction="sum")))
        y_true.append(batch.labels)
        y_pred.append(logits.argmax(dim=-1).cpu().numpy())
    return sum(losses) / max(len(rows), 1), np.concatenate(y_true), np.concatenate(y_pred)


def evaluate_all(model: EmotionClassifier, data: TrialData, cfg: TrialConfig, device: torch.device,
                 logger: RunLogger) -> dict[str, float]:
    """Full metric set, classification report and confusion matrix for every evaluation set."""
    metrics: dict[str, float] = {}
    for name, rows in data.eval_rows.items():
        loss, y_true, y_pred = predict(model, data, rows, device)
        metrics[f"{name}/loss"] = loss
        metrics.update(classification_metrics(name, y_true, y_pred))
        logger.log_text(report_text(y_true, y_pred), f"classification_report_{name}.txt")
        logger.log_figure(confusion_figure(confusion(y_true, y_pred), f"{name} (n={len(rows)})"),
                          f"confusion_matrix_{name}.png")
    return metrics
