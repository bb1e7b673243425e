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

Each step is a named phase (workers/core/phases.py): benchmarks and profilers observe the recipe
through `observe`, and a phase they expect that the recipe no longer enters fails them loudly.
"""

from __future__ import annotations

import math
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from shards.batching import PlannedBatch, mix_languages, plan_batches
from shards.label_map import RelabelledReader
from shards.reader import ShardReader, open_reader
from shards.schema import SAMPLE_RATE
from workers.core.artifact_writer import background_logging
from workers.core.phases import ObservedCalls, Phase, phase, waits
from workers.core.reporting import Reporter
from workers.core.run_note import trial_note
from workers.core.split import split_rows
from workers.core.tracking import CorpusSplit, RunLogger
from workers.finetune import tasks
from workers.finetune.augment import Augmenter
from workers.finetune.balance import TrainingLoss, balance_tags, training_loss
from workers.finetune.batch_sources import AudioSource, BatchSource, Feeding, feature_cache_blocker, frozen_features
from workers.finetune.checkpoint import load_model, load_train_state, save_model, save_train_state
from workers.finetune.config import Stage, TrialConfig
from workers.finetune.distributed import DataParallel
from workers.finetune.encoders.figures import layer_weights_figure
from workers.finetune.encoders.lora import add_lora, has_lora
from workers.finetune.export import card_facts, log_trained_model
from workers.finetune.frame_source import frontend_batches
from workers.finetune.model import (
    PRETRAINED,
    EmotionClassifier,
    build_encoder,
    set_trainable,
)
from workers.finetune.resume_state import (
    clone_optimizer_state,
    load_optimizer_state,
    restore_rng,
    save_optimizer_state,
)
from workers.finetune.train_state import TrainState, record_evaluation
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
    # The optimizer's state when training continues inside the same stage (a new stage starts a new one).
    optimizer_state: dict | None = None


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
    parallel: DataParallel | None = None  # data-parallel: this worker's slice of each batch, gradient sync
    optimizer: torch.optim.Optimizer | None = None  # the current stage's
    resumed_optimizer_state: dict | None = None  # a resumed checkpoint's, for the stage it continues
    criterion: TrainingLoss = field(default_factory=TrainingLoss)  # class weights, label smoothing
    augment: Augmenter | None = None  # of the training clips (workers.finetune.augment); None: off
    last_val_ccc: float = math.nan  # task 'dimensions' or 'both': the last evaluation round's mean CCC

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
    parallel: DataParallel | None = None,
) -> dict[str, float]:
    """Train one configuration and return its final metrics (also logged and reported).

    `resume_dir`: a checkpoint this trial reported earlier (model + train_state.json); training
    continues from the step after the best state it holds.
    `parallel`: this process's place when one trial runs data-parallel over several processes
    (workers/finetune/distributed.py): it trains its slice of every global batch, with its own
    dropout and masking seed, and the gradients are averaged over all clips before clipping.
    """
    started = time.perf_counter()
    logger, reporter = background_logging(logger, reporter, enabled=cfg.background_logging)
    logger = ObservedCalls(logger, Phase.LOGGING)  # phases: workers/core/phases.py, what benchmarks observe
    with phase(Phase.SETUP):
        trial = setup(cfg, logger, device, resume_dir, parallel)
    setup_seconds = time.perf_counter() - started
    for _ in range(trial.state.stage_index, len(trial.stages)):
        train_stage(trial, reporter)  # the stage the state is at; it leaves the state at the next one
    with phase(Phase.FINISH):
        return finish(trial, reporter, started, setup_seconds)


def setup(
    cfg: TrialConfig,
    logger: RunLogger,
    device: torch.device | None,
    resume_dir: str | Path | None,
    parallel: DataParallel | None = None,
) -> TrainingContext:
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(max(1, cfg.num_threads))
    seed_draws(cfg.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    data = load_trial_data(cfg)
    loads_before, hits_before = PRETRAINED.loads, PRETRAINED.hits
    if resume_dir is not None:
        model = load_model(resume_dir, encoder_overrides=cfg.encoder_overrides())
        check_labels(model, data.labels, resume_dir)
        state = TrainState.from_dict(load_train_state(resume_dir))
        restore_rng(state.rng_state)  # after the model is built: building it draws random weights
        weights = f"resumed from {resume_dir}"
    else:
        model = build_model(cfg, data.labels, *tasks.model_dimensions(cfg, data.reader))
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
    tasks.check_model(cfg, model, data.reader)
    if parallel is not None and parallel.rank > 0:
        # Own dropout and masking draws, after the model is built (the same weights on every worker);
        # worker 0 draws as a one-process trial would.
        seed_draws(parallel.seed(cfg.seed))
    model.encoder.set_attn_implementation(cfg.attn_implementation)  # pinned: whatever the start's config says
    model.to(device)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    feeding = Feeding.from_config(cfg, device, model.encoder.config, longest_eval_seconds(data))
    criterion = training_loss(cfg, data.reader.index.label[data.train_rows], data.labels, device)
    trial = TrainingContext(cfg, data, model, feeding, logger, cfg.stage_list(), state, parallel=parallel)
    trial.criterion, trial.augment = criterion, Augmenter.from_config(cfg)
    if resume_dir is not None:  # the checkpoint holds the best model so far, already reported
        trial.best = BestModel(_clone_weights(model), state, reported=True)
        trial.resumed_optimizer_state = load_optimizer_state(resume_dir)
    tags = {
        Tag.DATA_HASH: data.reader.content_hash,
        Tag.TRAIN_SPEAKERS: ",".join(cfg.train_speakers),
        Tag.DEVICE: str(device),
        Tag.WEIGHTS: weights,
        Tag.LABELS: ",".join(data.labels),
        Tag.ENCODER_FAMILY: model.family,
        Tag.EVAL_BATCH_SIZE: str(feeding.eval_batch_size),
        **balance_tags(data.reader.index.label[data.train_rows], data.labels, criterion),
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


def enable_gradient_checkpointing(model: EmotionClassifier) -> None:
    """Recompute the encoder's layer activations in the backward pass. Non-reentrant checkpointing: a
    frozen front end's output does not require grad, and reentrant checkpointing would then give the
    transformer no gradients; it also restores dropout's RNG state, so the maths stay the same."""
    model.encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def seed_draws(seed: int) -> None:
    """Seed the draws of weights, dropout and layerdrop (torch) and SpecAugment masks (HF: numpy's global)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


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


def build_model(
    cfg: TrialConfig, labels: tuple[str, ...], dimensions: tuple[str, ...] = (), scales: dict | None = None
) -> EmotionClassifier:
    """The start encoder with a fresh head for `labels` (the corpus's), or a saved emotion model
    (`init_from`) as it was, which must know the same labels.

    Either way the trial's encoder regularisation (dropouts, layerdrop, masking) applies.
    """
    if cfg.init_from:
        model = load_model(cfg.init_from, encoder_overrides=cfg.encoder_overrides())
        check_labels(model, labels, cfg.init_from)
        if cfg.uses_lora() and not has_lora(model.encoder):  # e.g. a LoRA trial's merged MLflow Model
            add_lora(model.encoder, cfg.lora_rank, cfg.lora_alpha, cfg.lora_target)
        return model
    encoder = build_encoder(
        cfg.start, cfg.encoder_overrides(), revision=cfg.start_revision, weights_dir=cfg.weights_dir
    )
    heads = {"labels": labels, "head_dropout": cfg.head_dropout, "task": cfg.task, "dimension_scales": scales}
    model = EmotionClassifier(encoder, pooling=cfg.pooling, layer=cfg.layer, dimensions=dimensions, **heads)
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
    """The speaker split of the trial's corpus (workers.core.split, as every kind), and the other corpora's sets."""
    reader = open_reader(cfg.data_dir)
    split = split_rows(reader, cfg.train_speakers, cfg.eval_sets, cfg.val_fraction, cfg.seed)
    other_corpora = {
        name: RelabelledReader(open_reader(directory), reader.labels, cfg.eval_label_map)
        for name, directory in cfg.extra_eval_data.items()
    }
    return TrialData(reader, split.train_rows, split.eval_rows, other_corpora)


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
    trial.optimizer = optimizer = stage_optimizer(trial, stage, parameters)
    num_batches = batches_per_epoch(stage, len(trial.data.train_rows))
    num_steps = stage_steps(stage, len(trial.data.train_rows))
    num_epochs = -(-num_steps // num_batches)
    for epoch in range(state.stage_epoch, num_epochs):
        plans, next_epoch_rng_state = plan_epoch(trial, stage)
        plans = plans[: num_steps - epoch * num_batches]  # the stage's last epoch may be a part of one
        last_epoch = epoch == num_epochs - 1
        source.train_mode()
        with closing(source.train_steps(plans[state.epoch_batches_done :])) as steps:
            for micro_batches in waits(Phase.DATA_WAIT, steps):
                learning_rate = stage.learning_rate * state.lr_scale
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate
                with phase(Phase.TRAIN_STEP, batches=micro_batches):
                    trial.train_losses.append(train_step(trial, source, optimizer, parameters, micro_batches))
                state.step += 1
                state.epoch_batches_done += 1
                if state.step % cfg.eval_every_steps == 0:
                    with phase(Phase.EVALUATION_ROUND):
                        is_best = evaluation_round(trial, source, learning_rate)
                    if is_best:
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


def stage_optimizer(trial: TrainingContext, stage: Stage, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
    """A new AdamW per stage (its trainable parameters differ); a trial resumed inside a stage gets the
    state its checkpoint saved, so it takes the steps the uninterrupted trial took."""
    optimizer = torch.optim.AdamW(
        parameters,
        lr=stage.learning_rate * trial.state.lr_scale,
        weight_decay=trial.cfg.weight_decay,
        fused=trial.device.type == "cuda",
    )
    saved, trial.resumed_optimizer_state = trial.resumed_optimizer_state, None
    mid_stage = trial.state.stage_epoch > 0 or trial.state.epoch_batches_done > 0
    if saved is not None and mid_stage:
        optimizer.load_state_dict(saved)
    return optimizer


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
    balanced, augmenting = trial.cfg.balanced_sampling, trial.augment is not None
    epoch_rows = mix_languages(index, trial.data.train_rows, fraction, rng, source=source, class_uniform=balanced)
    plans = plan_batches(index, epoch_rows, stage.batch_size, rng, trial.max_samples, seed_clips=augmenting)
    if trial.parallel is not None:  # every worker planned the same global batches: its slice of each
        plans = trial.parallel.share(plans, min_clips=trial.cfg.grad_accum_steps)
    return plans, rng.bit_generator.state


def batch_source(trial: TrainingContext, stage: Stage) -> BatchSource:
    """Cached features for a head-only stage when they give the same inputs, else audio."""
    cfg, data = trial.cfg, trial.data
    frozen = stage.trainable == "head"
    audio = audio_source(trial, encoder_train_mode=not frozen or cfg.frozen_encoder_dropout)
    audio.augment = trial.augment  # the training source only; evaluation sources never augment
    if not frozen:  # the frozen conv front end's cache when it may serve the stage
        return frontend_batches(trial, stage, audio)
    cache_tag = Tag.feature_cache(trial.state.stage_index)
    blocker = feature_cache_blocker(cfg, trial.model, data.reader, data.train_rows, trial.max_samples)
    if blocker is not None:
        trial.logger.set_tags({cache_tag: f"not used: {blocker}"})
        return audio
    # Train and val clips of the training speakers: the head trains on one and is evaluated on the other.
    rows = np.union1d(data.train_rows, data.eval_rows.get("val", data.train_rows[:0])).astype(np.int64)
    with phase(Phase.FEATURE_CACHE):
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
        values = tasks.batch_targets(trial.data.reader, host_batch.rows, trial.model.dimensions, trial.device)
        outputs = source.logits(batch)
        loss = tasks.step_loss(
            trial.cfg, len(trial.model.labels), outputs, batch.labels, values, num_clips, trial.criterion
        )
        loss.backward()
        batch_loss += loss.detach()
    if trial.parallel is not None:  # the clip below must see the global batch's gradient, as DDP's does
        trial.parallel.sync_gradients(parameters, num_clips)
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
    trial.last_val_ccc = tasks.mean_ccc(val.targets, val.values, trial.model.dimensions)
    curves = {
        Key.curve(Key.TRAIN_LOSS): train_loss,
        Key.curve(Key.TRAIN_LR): learning_rate,
        Key.curve(Key.VAL_LOSS): val.loss,
        Key.curve(Key.VAL_ACCURACY): state.last_val_accuracy,
    }
    if trial.model.dimensions:
        curves[Key.curve(Key.VAL_CCC)] = trial.last_val_ccc
    trial.logger.log_metrics(curves, step=state.step)
    return is_best


def keep_best(trial: TrainingContext, resume_at: TrainState) -> None:
    """Keep the model as the best so far; a resumed trial continues at `resume_at` (the next batch),
    with the optimizer's state when that is inside the current stage (only needed for a checkpoint)."""
    same_stage = resume_at.stage_index == trial.state.stage_index
    keep_optimizer = trial.cfg.checkpoint_on_best and same_stage and trial.optimizer is not None
    optimizer_state = clone_optimizer_state(trial.optimizer) if keep_optimizer else None
    trial.best = BestModel(_clone_weights(trial.model), resume_at.with_rng(), False, optimizer_state)


def _clone_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@dataclass(frozen=True)
class Predictions:
    loss: float  # the set's loss as the task has it (workers.finetune.tasks.set_loss): mean cross-entropy by default
    y_true: np.ndarray
    y_pred: np.ndarray
    probabilities: np.ndarray  # [clips, classes]
    values: np.ndarray | None = None  # [clips, dimensions]: the regression outputs of a dimensional model
    targets: np.ndarray | None = None  # [clips, dimensions]: the clips' true values (NaN: none)


@torch.no_grad()
def predict(trial: TrainingContext, source: BatchSource, rows: np.ndarray) -> Predictions:
    """Mean loss, labels, predictions and class probabilities over `rows` (one host sync at the end)."""
    trial.model.eval()
    loss_sum = torch.zeros((), device=trial.device)
    y_true, probabilities, values, batch_rows = [], [], [], []
    num_labels, dimensions = len(trial.model.labels), trial.model.dimensions
    with phase(Phase.PREDICT, source=source, rows=rows):
        for host_batch in source.eval_batches(rows):
            batch = host_batch.to(trial.device)
            outputs = source.logits(batch)
            logits = outputs[:, :num_labels]
            loss_sum += nn.functional.cross_entropy(logits, batch.labels, reduction="sum")
            y_true.append(host_batch.labels.numpy())
            probabilities.append(torch.softmax(logits, dim=-1))
            values.append(outputs[:, num_labels:])
            batch_rows.append(host_batch.rows)
    probs = torch.cat(probabilities).cpu().numpy() if probabilities else np.zeros((0, num_labels))
    true = np.concatenate(y_true) if y_true else np.zeros(0, dtype=np.int64)
    reader = getattr(source, "reader", trial.data.reader)  # a FeatureSource's rows are the training corpus's
    predicted, truth = tasks.set_values(reader, values, batch_rows, dimensions)
    loss = tasks.set_loss(trial.cfg, float(loss_sum) / max(len(rows), 1), truth, predicted, dimensions)
    return Predictions(loss, true, probs.argmax(axis=1), probs, predicted, truth)


def report_progress(trial: TrainingContext, reporter: Reporter) -> None:
    """Tune report at an epoch's end; the best model rides along when it changed since the last one."""
    state, best = trial.state, trial.best
    if state.stage_index >= len(trial.stages):
        return  # the final report (with test metrics) comes from finish() after the best model is restored
    metrics = {
        Key.EPOCH: state.epoch,
        Key.STEP: state.step,
        Key.VAL_LOSS: state.last_val_loss,
        Key.VAL_ACCURACY: state.last_val_accuracy,
    }
    if trial.model.dimensions:
        metrics[Key.VAL_CCC] = trial.last_val_ccc
    if not trial.cfg.checkpoint_on_best or best is None or best.reported:
        reporter.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="emotion-best-") as directory, phase(Phase.CHECKPOINT):
        save_model(trial.model, directory, state_dict=best.weights)
        save_train_state(directory, best.train_state.to_dict())
        if best.optimizer_state is not None:
            save_optimizer_state(directory, best.optimizer_state)
        best.reported = True
        reporter.report(metrics, checkpoint_dir=Path(directory))


def finish(trial: TrainingContext, reporter: Reporter, started: float, setup_seconds: float) -> dict[str, float]:
    state, model = trial.state, trial.model
    if trial.best is not None:
        model.load_state_dict(trial.best.weights)
    eval_started = time.perf_counter()
    with phase(Phase.FINAL_EVALUATION):
        final = evaluate_all(trial)
    eval_seconds = time.perf_counter() - eval_started
    final.update(layer_weights(trial))
    final.update(
        {
            Key.EPOCH: state.epoch,
            Key.STEP: state.step,
            Key.SETUP_SECONDS: setup_seconds,
            Key.FINAL_EVAL_SECONDS: eval_seconds,
            Key.TRIAL_SECONDS: time.perf_counter() - started,
        }
    )
    model_step = trial.best.train_state.step if trial.best is not None else state.step
    with tempfile.TemporaryDirectory() as tmp, phase(Phase.CHECKPOINT):
        model_dir = save_model(model, Path(tmp) / "model")
        # The final metrics, logged once and linked to the model (with the dataset of each set); a LoRA
        # model merged, to load anywhere; its model card (README.md) beside it.
        logged = {**final, Key.TRAIN_CLIPS: float(len(trial.data.train_rows))}
        log_trained_model(
            trial.logger,
            model,
            model_dir,
            Path(tmp),
            card_facts(trial, final),
            metrics=logged,
            step=state.step,
            model_step=model_step,
        )
        save_train_state(model_dir, state.with_rng().to_dict())  # Tune's copy only: past the last stage
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
        metrics[Key.set_metric(name, Key.UNMAPPED_CLIPS)] = float(other.mapped.num_unmapped)
    return metrics


def evaluate_set(trial: TrainingContext, source: BatchSource, name: str, rows: np.ndarray) -> dict[str, float]:
    """The model's predictions on `rows`, evaluated as every kind's are (workers.core.evaluation), with its own loss."""
    result = predict(trial, source, rows)
    return tasks.evaluate(trial.cfg, trial.logger, name, result, trial.model.labels, trial.model.dimensions)
