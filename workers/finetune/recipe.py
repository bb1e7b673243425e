"""The fine-tuning recipe: setup, train through the freeze schedule, evaluate on held-out speakers.

Reads top to bottom: `run_trial` is the whole story; helpers below it are one step each.

    setup        data, model (pretrained weights kept in-process for the next trial), or a
                 resumed checkpoint and its train_state.json
    train_stage  per stage of the schedule: freeze, then per epoch plan the batches (mix, bucket,
                 crop) and train them with accumulation and clipping, evaluating every
                 `eval_every_steps` (the paper's adaptive lr, early stopping, best model), and report
                 (with the best model as a checkpoint when it changed). A head-only stage trains from
                 cached features (workers.finetune.batch_sources).
    finish       restore the best model, evaluate every set, log the model, report the final result
"""

from __future__ import annotations

import base64
import dataclasses
import math
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from shards.batching import PlannedBatch, holdout, mix_languages, plan_batches
from shards.label_map import RelabelledReader
from shards.reader import ShardReader, open_reader
from shards.schema import SAMPLE_RATE
from workers.core.artifact_writer import background_logging
from workers.core.calibration import calibration_metrics, reliability_figure
from workers.core.metrics import classification_metrics, confusion, confusion_figure, report_dict, report_text
from workers.core.reporting import Reporter
from workers.core.run_note import trial_note
from workers.core.tracking import CorpusSplit, RunLogger
from workers.finetune.batch_sources import AudioSource, BatchSource, Feeding, feature_cache_blocker, frozen_features
from workers.finetune.checkpoint import load_model, load_train_state, save_model, save_train_state
from workers.finetune.config import Stage, TrialConfig
from workers.finetune.encoders import add_lora, layer_weights_figure
from workers.finetune.model import PRETRAINED, EmotionClassifier, build_encoder, set_trainable
from workers.vocabulary import Key, Tag


@dataclass
class TrialData:
    reader: ShardReader
    train_rows: np.ndarray
    eval_rows: dict[str, np.ndarray]  # 'val' (held-out clips of training speakers) + the plan's sets
    # Held-out sets from other corpora (cfg.extra_eval_data), their labels mapped to the reader's.
    other_corpora: dict[str, RelabelledReader] = field(default_factory=dict)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.reader.labels


@dataclass
class BestModel:
    """The best evaluated model so far, in memory until the trial ends."""

    weights: dict[str, torch.Tensor]
    train_state: TrainState  # where training continues from it: the checkpoint's train_state.json
    reported: bool  # already sent to Tune as a checkpoint


@dataclass
class TrainingContext:
    """What a running trial holds; the helpers below take it instead of a dozen arguments."""

    cfg: TrialConfig
    data: TrialData
    model: EmotionClassifier
    feeding: Feeding
    logger: RunLogger
    stages: list[Stage]
    state: TrainState  # where training is: the next batch to train, and the adaptive lr's memory
    best: BestModel | None = None
    train_losses: list[torch.Tensor] = field(default_factory=list)  # since the last evaluation; on the device
    sync_gradients: Callable[[list[nn.Parameter]], None] | None = None  # data-parallel: before clipping

    @property
    def device(self) -> torch.device:
        return self.feeding.device

    @property
    def max_samples(self) -> int:
        return int(self.cfg.max_seconds * SAMPLE_RATE)


def run_trial(
    cfg: TrialConfig,
    logger: RunLogger,
    reporter: Reporter,
    device: torch.device | None = None,
    resume_dir: str | Path | None = None,
    shard_rows: Callable[[np.ndarray], np.ndarray] | None = None,
    sync_gradients: Callable[[list[nn.Parameter]], None] | None = None,
) -> dict[str, float]:
    """Train one configuration and return its final metrics (also logged and reported).

    `resume_dir`: a checkpoint this trial reported earlier (model + train_state.json); training
    continues from the step after the best state it holds.
    `shard_rows`: this process's share of the training rows, when one trial runs data-parallel
    over several processes (workers/finetune/distributed.py); None: all of them.
    `sync_gradients`: run on the trainable parameters after every step's backward passes and before
    clipping (data-parallel: average the workers' gradients, so the clip sees the global one).
    """
    started = time.perf_counter()
    logger, reporter = background_logging(logger, reporter, enabled=cfg.background_logging)
    trial = setup(cfg, logger, device, resume_dir, shard_rows)
    trial.sync_gradients = sync_gradients
    setup_seconds = time.perf_counter() - started
    for _ in range(trial.state.stage_index, len(trial.stages)):
        train_stage(trial, reporter)  # the stage the state is at; it leaves the state at the next one
    return finish(trial, reporter, started, setup_seconds)


def setup(
    cfg: TrialConfig,
    logger: RunLogger,
    device: torch.device | None,
    resume_dir: str | Path | None,
    shard_rows: Callable[[np.ndarray], np.ndarray] | None = None,
) -> TrainingContext:
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(max(1, cfg.num_threads))
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)  # HF's SpecAugment masks draw from numpy's global generator
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    data = load_trial_data(cfg)
    if shard_rows is not None:
        data.train_rows = shard_rows(data.train_rows)
    loads_before, hits_before = PRETRAINED.loads, PRETRAINED.hits
    if resume_dir is not None:
        model = load_model(resume_dir, encoder_overrides=cfg.encoder_overrides())
        check_labels(model, data.labels, resume_dir)
        state = TrainState.from_dict(load_train_state(resume_dir))
        restore_torch_rng(state)  # after the model is built: building it draws random weights
        weights = f"resumed from {resume_dir}"
    else:
        model = build_model(cfg, data.labels)
        state = TrainState.fresh(cfg.seed)
        weights = (
            "loaded"
            if PRETRAINED.loads > loads_before
            else "in-process copy"
            if PRETRAINED.hits > hits_before
            else "init_from"
            if cfg.init_from
            else "built"
        )
    model.encoder.set_attn_implementation(cfg.attn_implementation)  # pinned: whatever the start's config says
    model.to(device)
    feeding = Feeding.from_config(cfg, device, model.encoder.config, longest_eval_seconds(data))
    trial = TrainingContext(cfg, data, model, feeding, logger, cfg.stage_list(), state)
    if resume_dir is not None:  # the checkpoint holds the best model so far, already reported
        trial.best = BestModel(_clone_weights(model), state, reported=True)
    tags = {
        Tag.DATA_HASH: data.reader.content_hash,
        Tag.TRAIN_SPEAKERS: ",".join(cfg.train_speakers),
        Tag.DEVICE: str(device),
        Tag.WEIGHTS: weights,
        Tag.LABELS: ",".join(data.labels),
        Tag.ENCODER_FAMILY: model.family,
        Tag.EVAL_BATCH_SIZE: str(feeding.eval_batch_size),
    }
    for name, other in data.other_corpora.items():
        tags[Tag.eval_data(name)] = f"{other.data_dir}; {other.mapped.describe()}"
    if cfg.compile:
        tags[Tag.COMPILE] = compile_encoder(model, cfg, device)
    tags[Tag.NOTE] = trial_note(
        f"`{cfg.start}` ({model.family}, stages: {', '.join(str(s.trainable) for s in trial.stages)})",
        Path(cfg.data_dir).name,
        tuple(cfg.train_speakers),
        {"train": len(data.train_rows), **{name: len(rows) for name, rows in data.eval_rows.items()}},
        dict(cfg.eval_sets),
        {name: f"{other.data_dir}, {other.mapped.describe()}" for name, other in data.other_corpora.items()},
    )
    logger.log_params(cfg.to_dict())
    logger.set_tags(tags)
    logger.log_datasets(corpus_splits(cfg, data))
    return trial


def corpus_splits(cfg: TrialConfig, data: TrialData) -> list[CorpusSplit]:
    """What the trial trains and is evaluated on, as the run's dataset inputs: one per split, named
    by corpus, split and speakers (folds of one corpus differ only there), the shards' hash as digest."""
    corpus = Path(cfg.data_dir).name
    speakers = {"train": cfg.train_speakers, "val": cfg.train_speakers, **cfg.eval_sets}
    splits = {"train": data.train_rows, **data.eval_rows}
    return [
        CorpusSplit(
            name=f"{corpus} {split}: {','.join(speakers.get(split, ()))}",
            content_hash=data.reader.content_hash,
            data_dir=str(Path(cfg.data_dir).resolve()),
            split=split,
            num_clips=len(rows),
            speakers=tuple(speakers.get(split, ())),
        )
        for split, rows in splits.items()
    ]


def build_model(cfg: TrialConfig, labels: tuple[str, ...]) -> EmotionClassifier:
    """The start encoder with a fresh head for `labels` (the corpus's), or a saved emotion model
    (`init_from`) as it was, which must know the same labels.

    Either way the trial's encoder regularisation (dropouts, layerdrop, masking) applies.
    """
    if cfg.init_from:
        model = load_model(cfg.init_from, encoder_overrides=cfg.encoder_overrides())
        check_labels(model, labels, cfg.init_from)
        return model
    encoder = build_encoder(
        cfg.start, cfg.encoder_overrides(), revision=cfg.start_revision, weights_dir=cfg.weights_dir
    )
    model = EmotionClassifier(
        encoder, labels=labels, head_dropout=cfg.head_dropout, pooling=cfg.pooling, layer=cfg.layer
    )
    if cfg.uses_lora():
        add_lora(model.encoder, cfg.lora_rank, cfg.lora_alpha, cfg.lora_target)
    return model


def check_labels(model: EmotionClassifier, labels: tuple[str, ...], source: str | Path) -> None:
    """A saved model continues only on a corpus with its own label set, in its order (class i = label i)."""
    if tuple(model.labels) != tuple(labels):
        raise ValueError(
            f"the model in {source} classifies {tuple(model.labels)}, the training corpus has labels {tuple(labels)}; "
            "a model only continues training on its own label set (test it on another corpus with --eval-data)"
        )


def compile_encoder(model: EmotionClassifier, cfg: TrialConfig, device: torch.device) -> str:
    """torch.compile the encoder on CUDA (dynamic shapes: bucketed batches vary in length)."""
    if device.type != "cuda":
        return "skipped: cpu"
    model.encoder.compile(dynamic=True, mode=cfg.compile_mode)
    return cfg.compile_mode


def load_trial_data(cfg: TrialConfig) -> TrialData:
    reader = open_reader(cfg.data_dir)
    known = set(reader.index.speaker)
    for speaker in (*cfg.train_speakers, *(s for group in cfg.eval_sets.values() for s in group)):
        if speaker not in known:
            raise ValueError(f"speaker {speaker} is not in {cfg.data_dir}; it has {sorted(known)}")
    train_rows, val_rows = holdout(reader.index, reader.index.select(cfg.train_speakers), cfg.val_fraction, cfg.seed)
    eval_rows = {"val": val_rows} if len(val_rows) else {}
    eval_rows.update({name: reader.index.select(speakers) for name, speakers in cfg.eval_sets.items()})
    other_corpora = {
        name: RelabelledReader(open_reader(directory), reader.labels, cfg.eval_label_map)
        for name, directory in cfg.extra_eval_data.items()
    }
    return TrialData(reader, train_rows, eval_rows, other_corpora)


def longest_eval_seconds(data: TrialData) -> float:
    """The longest clip any evaluation set holds (evaluation batches take whole clips)."""
    rows = [r for r in data.eval_rows.values() if len(r)]
    return float(max((data.reader.index.num_samples[r].max() for r in rows), default=0)) / SAMPLE_RATE


def batches_per_epoch(stage: Stage, num_train_rows: int) -> int:
    """Planned batches of one epoch: every training row once, the last batch possibly short."""
    return max(1, -(-num_train_rows // stage.batch_size))


def stage_steps(stage: Stage, num_train_rows: int) -> int:
    """Optimizer steps of a stage: its epochs (a fractional last one included) times the batches of one."""
    return max(1, round(stage.epochs * batches_per_epoch(stage, num_train_rows)))


def train_stage(trial: TrainingContext, reporter: Reporter) -> None:
    """Train the stage at `trial.state.stage_index` from the batch the state names; report after every epoch.

    On return the state points at the next stage's first batch.
    """
    cfg, model, state = trial.cfg, trial.model, trial.state
    stage = trial.stages[state.stage_index]
    if state.stage_epoch == 0 and state.epoch_batches_done == 0:
        start_stage(state, cfg)
    set_trainable(model, stage.trainable)
    source = batch_source(trial, stage)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        parameters,
        lr=stage.learning_rate * state.lr_scale,
        weight_decay=cfg.weight_decay,
        fused=trial.device.type == "cuda",
    )
    num_batches = batches_per_epoch(stage, len(trial.data.train_rows))
    num_steps = stage_steps(stage, len(trial.data.train_rows))
    num_epochs = -(-num_steps // num_batches)
    for epoch in range(state.stage_epoch, num_epochs):
        plans, next_epoch_rng_state = plan_epoch(trial, stage)
        plans = plans[: num_steps - epoch * num_batches]  # the stage's last epoch may be a part of one
        last_epoch = epoch == num_epochs - 1
        source.train_mode()
        with closing(source.train_steps(plans[state.epoch_batches_done :])) as steps:
            for micro_batches in steps:
                learning_rate = stage.learning_rate * state.lr_scale
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate
                trial.train_losses.append(train_step(trial, source, optimizer, parameters, micro_batches))
                state.step += 1
                state.epoch_batches_done += 1
                if state.step % cfg.eval_every_steps == 0:
                    if evaluation_round(trial, source, learning_rate):
                        # A resumed trial continues at the next batch: after an epoch's last, the next epoch's first.
                        epoch_done = state.epoch_batches_done == len(plans)
                        keep_best(trial, state.after_epoch(next_epoch_rng_state, last_epoch) if epoch_done else state)
                    source.train_mode()
                if state.stopped_early:
                    break
        trial.state = state = state.after_epoch(next_epoch_rng_state, stage_over=last_epoch or state.stopped_early)
        report_progress(trial, reporter)
        if state.stopped_early:
            break


def start_stage(state: TrainState, cfg: TrialConfig) -> None:
    """A stage starts at its own learning rate (unless carried over) with fresh early-stopping counts."""
    if cfg.reset_lr_each_stage:
        state.lr_scale = 1.0
    state.rounds_rising = 0
    state.rounds_since_best = 0
    state.stopped_early = False


def plan_epoch(trial: TrainingContext, stage: Stage) -> tuple[list[PlannedBatch], dict]:
    """This epoch's batches (language mix, length buckets, crops) and the rng state the next epoch starts from.

    An epoch is a pure function of the rng state it starts from, so a resumed trial replans it
    and skips the batches already trained.
    """
    index = trial.data.reader.index
    rng = np.random.default_rng()
    rng.bit_generator.state = trial.state.epoch_rng_state
    source, fraction = trial.cfg.mixing()
    epoch_rows = mix_languages(index, trial.data.train_rows, fraction, rng, source=source)
    plans = plan_batches(index, epoch_rows, stage.batch_size, rng, trial.max_samples)
    return plans, rng.bit_generator.state


def batch_source(trial: TrainingContext, stage: Stage) -> BatchSource:
    """Cached features for a head-only stage when they give the same inputs, else audio."""
    cfg, data = trial.cfg, trial.data
    frozen = stage.trainable == "head"
    audio = audio_source(trial, encoder_train_mode=not frozen or cfg.frozen_encoder_dropout)
    if not frozen:
        return audio
    cache_tag = Tag.feature_cache(trial.state.stage_index)
    blocker = feature_cache_blocker(cfg, trial.model, data.reader, data.train_rows, trial.max_samples)
    if blocker is not None:
        trial.logger.set_tags({cache_tag: f"not used: {blocker}"})
        return audio
    # Train and val clips of the training speakers: the head trains on one and is evaluated on the other.
    rows = np.union1d(data.train_rows, data.eval_rows.get("val", data.train_rows[:0])).astype(np.int64)
    features, status = frozen_features(audio, rows, cfg.feature_cache_dir)
    trial.logger.set_tags({cache_tag: status})
    return features


def audio_source(trial: TrainingContext, encoder_train_mode: bool, reader=None) -> AudioSource:
    """Clips of the training corpus (or of `reader`: another corpus, relabelled) through the model."""
    reader = trial.data.reader if reader is None else reader
    return AudioSource(trial.model, reader, trial.max_samples, trial.feeding, encoder_train_mode)


def train_step(
    trial: TrainingContext,
    source: BatchSource,
    optimizer: torch.optim.Optimizer,
    parameters: list[nn.Parameter],
    micro_batches: list,
) -> torch.Tensor:
    """One optimizer step over a batch split into micro-batches; the loss is the batch mean."""
    optimizer.zero_grad(set_to_none=True)
    num_clips = sum(len(b.rows) for b in micro_batches)
    batch_loss = torch.zeros((), device=trial.device)
    for host_batch in micro_batches:
        batch = host_batch.to(trial.device)
        loss = nn.functional.cross_entropy(source.logits(batch), batch.labels, reduction="sum") / num_clips
        loss.backward()
        batch_loss += loss.detach()
    if trial.sync_gradients is not None:
        trial.sync_gradients(parameters)  # the clip below must see the global gradient, as DDP's does
    if trial.cfg.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(parameters, trial.cfg.max_grad_norm)
    optimizer.step()
    return batch_loss


def evaluation_round(trial: TrainingContext, source: BatchSource, learning_rate: float) -> bool:
    """Val loss every `eval_every_steps`: adaptive lr, early stopping, learning curves. True: a new best."""
    state = trial.state
    if "val" not in trial.data.eval_rows:
        trial.train_losses.clear()
        return False
    val = predict(trial, source, trial.data.eval_rows["val"])
    train_loss = float(torch.stack(trial.train_losses).mean()) if trial.train_losses else float("nan")
    trial.train_losses.clear()
    is_best = record_evaluation(state, trial.cfg, val.loss, float(np.mean(val.y_true == val.y_pred)))
    trial.logger.log_metrics(
        {
            Key.curve("train/loss"): train_loss,
            Key.curve("train/lr"): learning_rate,
            Key.curve("val/loss"): val.loss,
            Key.curve("val/accuracy"): state.last_val_accuracy,
        },
        step=state.step,
    )
    return is_best


def keep_best(trial: TrainingContext, resume_at: TrainState) -> None:
    """Keep the model as the best so far; a resumed trial continues at `resume_at` (the next batch)."""
    trial.best = BestModel(_clone_weights(trial.model), resume_at.with_torch_rng(), reported=False)


def _clone_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@dataclass(frozen=True)
class Predictions:
    loss: float  # mean cross-entropy
    y_true: np.ndarray
    y_pred: np.ndarray
    probabilities: np.ndarray  # [clips, classes]


@torch.no_grad()
def predict(trial: TrainingContext, source: BatchSource, rows: np.ndarray) -> Predictions:
    """Mean loss, labels, predictions and class probabilities over `rows` (one host sync at the end)."""
    trial.model.eval()
    loss_sum = torch.zeros((), device=trial.device)
    y_true, probabilities = [], []
    for host_batch in source.eval_batches(rows):
        batch = host_batch.to(trial.device)
        logits = source.logits(batch)
        loss_sum += nn.functional.cross_entropy(logits, batch.labels, reduction="sum")
        y_true.append(host_batch.labels.numpy())
        probabilities.append(torch.softmax(logits, dim=-1))
    probs = torch.cat(probabilities).cpu().numpy() if probabilities else np.zeros((0, len(trial.model.labels)))
    true = np.concatenate(y_true) if y_true else np.zeros(0, dtype=np.int64)
    return Predictions(float(loss_sum) / max(len(rows), 1), true, probs.argmax(axis=1), probs)


def report_progress(trial: TrainingContext, reporter: Reporter) -> None:
    """Tune report at an epoch's end; the best model rides along when it changed since the last one."""
    state, best = trial.state, trial.best
    if state.stage_index >= len(trial.stages):
        return  # the final report (with test metrics) comes from finish() after the best model is restored
    metrics = {
        "epoch": state.epoch,
        "step": state.step,
        "val/loss": state.last_val_loss,
        "val/accuracy": state.last_val_accuracy,
    }
    if not trial.cfg.checkpoint_on_best or best is None or best.reported:
        reporter.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="emotion-best-") as directory:
        save_model(trial.model, directory, state_dict=best.weights)
        save_train_state(directory, best.train_state.to_dict())
        best.reported = True
        reporter.report(metrics, checkpoint_dir=Path(directory))


def finish(trial: TrainingContext, reporter: Reporter, started: float, setup_seconds: float) -> dict[str, float]:
    state, model = trial.state, trial.model
    if trial.best is not None:
        model.load_state_dict(trial.best.weights)
    final = evaluate_all(trial)
    final.update(layer_weights(trial))
    final.update(
        {
            "epoch": state.epoch,
            "step": state.step,
            "setup_seconds": setup_seconds,
            "trial_seconds": time.perf_counter() - started,
        }
    )
    model_step = trial.best.train_state.step if trial.best is not None else state.step
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_model(model, Path(tmp) / "model")
        # The final metrics, logged once and linked to the model (with the dataset of each set).
        logged = {**final, Key.TRAIN_CLIPS: float(len(trial.data.train_rows))}
        trial.logger.log_model(str(model_dir), logged, step=state.step, model_step=model_step)
        save_train_state(model_dir, state.with_torch_rng().to_dict())  # Tune's copy only: past the last stage
        reporter.report(final, checkpoint_dir=model_dir)
    return final


def layer_weights(trial: TrainingContext) -> dict[str, float]:
    """A weighted layer sum's learned softmax weights: a bar chart artifact and `layer_weight/<i>` metrics."""
    logits = getattr(trial.model.pooler, "layer_weights", None)
    if logits is None:
        return {}
    title = f"{trial.model.family}: softmax weight per hidden state"
    trial.logger.log_figure(layer_weights_figure(logits, title), Key.LAYER_WEIGHTS_FIGURE)
    weights = torch.softmax(logits.detach().float().cpu(), dim=0).tolist()
    return {f"{Key.LAYER_WEIGHT_PREFIX}{index}": weight for index, weight in enumerate(weights)}


def evaluate_all(trial: TrainingContext) -> dict[str, float]:
    """Full metric set, classification report and confusion matrix for every evaluation set,
    the held-out sets of other corpora included (with the clips their label map left out)."""
    source = audio_source(trial, encoder_train_mode=False)
    metrics: dict[str, float] = {}
    for name, rows in trial.data.eval_rows.items():
        metrics.update(evaluate_set(trial, source, name, rows))
    for name, other in trial.data.other_corpora.items():
        other_source = audio_source(trial, encoder_train_mode=False, reader=other)
        metrics.update(evaluate_set(trial, other_source, name, other.rows))
        metrics[f"{name}/{Key.UNMAPPED_CLIPS}"] = float(other.mapped.num_unmapped)
    return metrics


def evaluate_set(trial: TrainingContext, source: BatchSource, name: str, rows: np.ndarray) -> dict[str, float]:
    labels = trial.model.labels
    result = predict(trial, source, rows)
    metrics = {f"{name}/loss": result.loss, **classification_metrics(name, result.y_true, result.y_pred, labels)}
    trial.logger.log_text(report_text(result.y_true, result.y_pred, labels), Key.classification_report(name, "txt"))
    trial.logger.log_dict(report_dict(result.y_true, result.y_pred, labels), Key.classification_report(name))
    trial.logger.log_figure(
        confusion_figure(confusion(result.y_true, result.y_pred, labels), f"{name} (n={len(rows)})", labels),
        Key.confusion_matrix(name),
    )
    # Calibration: ECE and a reliability diagram, to choose an abstention threshold for predict.
    metrics.update(calibration_metrics(name, result.y_true, result.probabilities))
    trial.logger.log_figure(
        reliability_figure(result.y_true, result.probabilities, f"{name} (n={len(rows)})"),
        f"reliability_{name}.png",
    )
    return metrics


@dataclass
class TrainState:
    """Where a trial continues and what the adaptive learning rate remembers: a checkpoint's train_state.json.

    The position is always the next batch to train, so a resumed trial continues exactly there.
    """

    stage_index: int = 0  # the stage being trained (len(stages): training is over)
    stage_epoch: int = 0  # epochs of that stage already finished
    epoch_batches_done: int = 0  # planned batches of the current epoch already trained
    epoch_rng_state: dict = field(default_factory=dict)  # numpy PCG64 state the current epoch is planned from
    step: int = 0  # optimizer steps taken in the whole trial
    epoch: int = 0  # epochs finished in the whole trial (a stage's last, partial epoch counts)
    torch_rng_state: str = ""  # base64 of torch's CPU generator when saved (dropout continues from it); "": unset
    # The paper's adaptive learning rate and early stopping (record_evaluation)
    lr_scale: float = 1.0  # product of the adaptive decays (x lr_decay_factor each)
    last_val_loss: float = math.inf
    last_val_accuracy: float = 0.0
    rounds_rising: int = 0  # consecutive evaluation rounds whose val loss rose
    rounds_since_best: int = 0
    best_val_loss: float = math.inf
    stopped_early: bool = False  # the current stage ends after this batch

    @classmethod
    def fresh(cls, seed: int) -> TrainState:
        return cls(epoch_rng_state=np.random.default_rng(seed).bit_generator.state)

    def after_epoch(self, next_epoch_rng_state: dict, stage_over: bool) -> TrainState:
        """Where training continues once the current epoch (and, when `stage_over`, its stage) is over."""
        return dataclasses.replace(
            self,
            stage_index=self.stage_index + 1 if stage_over else self.stage_index,
            stage_epoch=0 if stage_over else self.stage_epoch + 1,
            epoch_batches_done=0,
            epoch_rng_state=next_epoch_rng_state,
            epoch=self.epoch + 1,
        )

    def with_torch_rng(self) -> TrainState:
        """This state with torch's generator as it is now, for a checkpoint."""
        raw = torch.get_rng_state().numpy().tobytes()
        return dataclasses.replace(self, torch_rng_state=base64.b64encode(raw).decode())

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> TrainState:
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [name for name in names if name not in saved]
        if missing:
            raise ValueError(f"train_state.json lacks {missing}: it was saved by another version of the recipe")
        return cls(**{name: saved[name] for name in names})


def restore_torch_rng(state: TrainState) -> None:
    if state.torch_rng_state:
        raw = np.frombuffer(base64.b64decode(state.torch_rng_state), dtype=np.uint8).copy()
        torch.set_rng_state(torch.from_numpy(raw))


def record_evaluation(state: TrainState, cfg: TrialConfig, val_loss: float, val_accuracy: float) -> bool:
    """The paper's adaptive learning rate and early stopping, after one evaluation round.

    Val loss that rose for more than `lr_decay_patience` consecutive rounds multiplies the
    learning rate by `lr_decay_factor` (and the count starts again); `early_stop_patience` rounds
    without a new best end the stage. Returns whether this round is the best so far.
    """
    state.rounds_rising = state.rounds_rising + 1 if val_loss > state.last_val_loss else 0
    state.last_val_loss = val_loss
    state.last_val_accuracy = val_accuracy
    if state.rounds_rising > cfg.lr_decay_patience:
        state.lr_scale *= cfg.lr_decay_factor
        state.rounds_rising = 0
    if val_loss < state.best_val_loss:
        state.best_val_loss = val_loss
        state.rounds_since_best = 0
        return True
    state.rounds_since_best += 1
    state.stopped_early = 0 < cfg.early_stop_patience < state.rounds_since_best
    return False
