"""The fine-tuning recipe: setup, train through the freeze schedule, evaluate on held-out speakers.

Reads top to bottom: `run_trial` is the whole story; helpers below it are one step each.

    setup        data, model (pretrained weights kept in-process for the next trial), or a
                 resumed checkpoint and its train_state.json
    train_stage  per stage of the schedule: freeze, plan each epoch (mix, bucket, crop), train with
                 accumulation and clipping, evaluate every `eval_every_steps` (the paper's
                 adaptive lr, early stopping, best state), report each epoch (with the best model
                 as a checkpoint when it changed). A head-only stage trains from cached features.
    finish       restore the best state, evaluate every set, log the model, report the final result
"""

from __future__ import annotations

import base64
import math
import tempfile
import time
from collections.abc import Callable
from contextlib import closing, nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from shards.batching import PlannedBatch, holdout, mix_languages, plan_batches
from shards.reader import ShardReader, open_reader
from shards.schema import SAMPLE_RATE
from workers.artifact_writer import background_logging
from workers.calibration import calibration_metrics, reliability_figure
from workers.checkpoint import load_model, load_train_state, save_model, save_train_state
from workers.config import Stage, TrialConfig
from workers.features import cached_features, default_cache_dir, encoder_fingerprint, feature_key
from workers.loader import (
    AudioBatch,
    FeatureBatch,
    FeatureTable,
    audio_eval_batches,
    audio_steps,
    feature_eval_batches,
    feature_steps,
)
from workers.metrics import classification_metrics, confusion, confusion_figure, report_text
from workers.model import PRETRAINED, EmotionClassifier, build_encoder, normalize_audio, set_trainable
from workers.reporting import Reporter
from workers.tracking import RunLogger


@dataclass
class TrialData:
    reader: ShardReader
    train_rows: np.ndarray
    eval_rows: dict[str, np.ndarray]  # 'val' (held-out clips of training speakers) + the plan's sets


@dataclass
class TrainState:
    """Where a trial is in its schedule and what the adaptive learning rate remembers.

    The fields up to `stopped_early` are what train_state.json holds: the position is always the
    next step to run, so a resumed trial continues exactly there.
    """

    step: int = 0  # optimizer steps taken
    epoch: int = 0  # epochs finished (a stage's last, partial epoch counts)
    stage_index: int = 0
    stage_step: int = 0  # optimizer steps taken in the current stage
    epoch_batches_done: int = 0  # steps taken in the current epoch
    epoch_rng_state: dict = field(default_factory=dict)  # numpy PCG64 state the current epoch is planned from
    lr_scale: float = 1.0  # product of the adaptive decays (x lr_decay_factor each)
    last_val_loss: float = math.inf
    last_val_accuracy: float = 0.0
    rounds_rising: int = 0  # consecutive evaluation rounds whose val loss rose
    rounds_since_best: int = 0
    best_val_loss: float = math.inf
    stopped_early: bool = False
    # In memory only.
    best_state: dict | None = None
    best_snapshot: dict | None = None  # snapshot() when the best was found: the checkpoint's train_state.json
    best_unsaved: bool = False  # the best changed since the last reported checkpoint
    train_losses: list = field(default_factory=list)  # device tensors: no host sync per step

    @classmethod
    def fresh(cls, seed: int) -> TrainState:
        return cls(epoch_rng_state=np.random.default_rng(seed).bit_generator.state)

    def snapshot(self) -> dict:
        names = [f.name for f in fields(self)]
        saved = {name: getattr(self, name) for name in names[: names.index("stopped_early") + 1]}
        saved["torch_rng_state"] = base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()
        return saved

    @classmethod
    def from_snapshot(cls, saved: dict) -> TrainState:
        names = {f.name for f in fields(cls)}
        state = cls(**{k: v for k, v in saved.items() if k in names})
        if "torch_rng_state" in saved:
            raw = np.frombuffer(base64.b64decode(saved["torch_rng_state"]), dtype=np.uint8).copy()
            torch.set_rng_state(torch.from_numpy(raw))
        return state

    def start_stage(self, cfg: TrialConfig) -> None:
        if cfg.reset_lr_each_stage:
            self.lr_scale = 1.0
        self.rounds_rising = 0
        self.rounds_since_best = 0
        self.stopped_early = False

    def advance(self, batches_in_epoch: int, steps_in_stage: int, next_epoch_rng_state: dict) -> None:
        """Count one optimizer step; close the epoch (and the stage) when they are done."""
        self.step += 1
        self.stage_step += 1
        self.epoch_batches_done += 1
        if self.stage_step >= steps_in_stage:
            self.end_epoch(next_epoch_rng_state, end_stage=True)
        elif self.epoch_batches_done >= batches_in_epoch:
            self.end_epoch(next_epoch_rng_state)

    def end_epoch(self, next_epoch_rng_state: dict, end_stage: bool = False) -> None:
        self.epoch += 1
        self.epoch_batches_done = 0
        self.epoch_rng_state = next_epoch_rng_state
        if end_stage:
            self.stage_index += 1
            self.stage_step = 0


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


@dataclass
class Trial:
    """Everything a running trial holds; helpers take it instead of a dozen arguments."""

    cfg: TrialConfig
    data: TrialData
    model: EmotionClassifier
    device: torch.device
    logger: RunLogger
    stages: list[Stage]
    state: TrainState

    @property
    def max_samples(self) -> int:
        return int(self.cfg.max_seconds * SAMPLE_RATE)

    @property
    def pin(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        enabled = self.device.type == "cuda" and self.cfg.bf16
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled) if enabled else nullcontext()


def run_trial(
    cfg: TrialConfig,
    logger: RunLogger,
    reporter: Reporter,
    device: torch.device | None = None,
    resume_dir: str | Path | None = None,
    shard_rows: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, float]:
    """Train one configuration and return its final metrics (also logged and reported).

    `resume_dir`: a checkpoint this trial reported earlier (model + train_state.json); training
    continues from the step after the best state it holds.
    `shard_rows`: this process's share of the training rows, when one trial runs data-parallel
    over several processes (workers/distributed.py); None: all of them.
    """
    started = time.perf_counter()
    logger, reporter = background_logging(logger, reporter, enabled=cfg.background_logging)
    trial = setup(cfg, logger, device, resume_dir, shard_rows)
    setup_seconds = time.perf_counter() - started
    while trial.state.stage_index < len(trial.stages):
        train_stage(trial, reporter)
    return finish(trial, reporter, started, setup_seconds)


def setup(
    cfg: TrialConfig,
    logger: RunLogger,
    device: torch.device | None,
    resume_dir: str | Path | None,
    shard_rows: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Trial:
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
        state = TrainState.from_snapshot(load_train_state(resume_dir))
        weights = f"resumed from {resume_dir}"
    else:
        model = build_model(cfg)
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
    model.to(device)
    if resume_dir is not None:
        state.best_state = _clone_state(model)  # the checkpoint holds the best model so far
    tags = {
        "data_hash": data.reader.content_hash,
        "train_speakers": ",".join(cfg.train_speakers),
        "device": str(device),
        "weights": weights,
    }
    if cfg.compile:
        tags["compile"] = compile_encoder(model, cfg, device)
    logger.log_params(cfg.to_dict())
    logger.set_tags(tags)
    return Trial(cfg, data, model, device, logger, cfg.stage_list(), state)


def build_model(cfg: TrialConfig) -> EmotionClassifier:
    """The start encoder with a fresh head, or a saved emotion model (`init_from`) as it was.

    Either way the trial's encoder regularisation (dropouts, layerdrop, masking) applies.
    """
    if cfg.init_from:
        return load_model(cfg.init_from, encoder_overrides=cfg.encoder_overrides())
    encoder = build_encoder(
        cfg.start, cfg.encoder_overrides(), revision=cfg.start_revision, weights_dir=cfg.weights_dir
    )
    return EmotionClassifier(encoder, head_dropout=cfg.head_dropout, pooling=cfg.pooling)


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
    return TrialData(reader, train_rows, eval_rows)


def stage_steps(stage: Stage, num_train_rows: int) -> int:
    """Optimizer steps of a stage: its epochs times the batches of one epoch."""
    return max(1, round(stage.epochs * -(-num_train_rows // stage.batch_size)))


def train_stage(trial: Trial, reporter: Reporter) -> None:
    """Train the stage at `state.stage_index` (from where the state says); report after every epoch."""
    cfg, state, model = trial.cfg, trial.state, trial.model
    stage_index = state.stage_index
    stage = trial.stages[stage_index]
    if state.stage_step == 0 and state.epoch_batches_done == 0:
        state.start_stage(cfg)
    set_trainable(model, stage.trainable)
    source = batch_source(trial, stage)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        parameters,
        lr=stage.learning_rate * state.lr_scale,
        weight_decay=cfg.weight_decay,
        fused=trial.device.type == "cuda",
    )
    steps_in_stage = stage_steps(stage, len(trial.data.train_rows))
    while state.stage_index == stage_index:
        plans, next_epoch_rng_state = plan_epoch(trial, stage)
        if state.epoch_batches_done >= len(plans):
            state.end_epoch(next_epoch_rng_state, end_stage=state.stage_step >= steps_in_stage)
            continue
        source.train_mode()
        with closing(source.train_steps(plans[state.epoch_batches_done :])) as steps:
            for micro_batches in steps:
                learning_rate = stage.learning_rate * state.lr_scale
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate
                state.train_losses.append(train_step(trial, source, optimizer, parameters, micro_batches))
                state.advance(len(plans), steps_in_stage, next_epoch_rng_state)
                if state.step % cfg.eval_every_steps == 0:
                    evaluation_round(trial, source, learning_rate)
                    source.train_mode()
                if state.stopped_early and state.stage_index == stage_index:
                    end_stage_early(state, next_epoch_rng_state)
                if state.epoch_batches_done == 0:
                    break  # the epoch (or the stage) is over
        report_progress(trial, reporter)


def plan_epoch(trial: Trial, stage: Stage) -> tuple[list[PlannedBatch], dict]:
    """This epoch's batches (en/zh mix, length buckets, crops) and the rng state the next epoch starts from.

    An epoch is a pure function of the rng state it starts from, so a resumed trial replans it
    and skips the steps already taken.
    """
    index = trial.data.reader.index
    rng = np.random.default_rng()
    rng.bit_generator.state = trial.state.epoch_rng_state
    epoch_rows = mix_languages(index, trial.data.train_rows, trial.cfg.english_fraction, rng)
    plans = plan_batches(index, epoch_rows, stage.batch_size, rng, trial.max_samples)
    return plans, rng.bit_generator.state


def end_stage_early(state: TrainState, next_epoch_rng_state: dict) -> None:
    if state.epoch_batches_done > 0:
        state.end_epoch(next_epoch_rng_state, end_stage=True)
    else:  # the step that triggered it had just closed an epoch
        state.stage_index += 1
        state.stage_step = 0


def train_step(
    trial: Trial, source, optimizer: torch.optim.Optimizer, parameters: list[nn.Parameter], micro_batches: list
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
    if trial.cfg.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(parameters, trial.cfg.max_grad_norm)
    optimizer.step()
    return batch_loss


def forward(model: EmotionClassifier, batch: AudioBatch, trial: Trial) -> torch.Tensor:
    values, mask = normalize_audio(batch.audio, batch.lengths)
    with trial.autocast():
        return model(values, attention_mask=mask).float()


class AudioSource:
    """Clips from the shards through the whole model."""

    def __init__(self, trial: Trial, encoder_train_mode: bool):
        self.trial = trial
        self.encoder_train_mode = encoder_train_mode

    def train_mode(self) -> None:
        self.trial.model.train()
        if not self.encoder_train_mode:
            self.trial.model.encoder.eval()  # frozen: deterministic features, as the cached path

    def train_steps(self, plans):
        t = self.trial
        return audio_steps(t.data.reader, plans, t.max_samples, t.cfg.grad_accum_steps, t.pin, t.cfg.prefetch_batches)

    def logits(self, batch: AudioBatch) -> torch.Tensor:
        return forward(self.trial.model, batch, self.trial)

    def eval_batches(self, rows: np.ndarray):
        t = self.trial
        return audio_eval_batches(t.data.reader, rows, t.cfg.eval_batch_size, t.pin, t.cfg.prefetch_batches)


class FeatureSource:
    """Cached pooled features of the frozen encoder, straight into the head."""

    def __init__(self, trial: Trial, table: FeatureTable):
        self.trial = trial
        self.table = table

    def train_mode(self) -> None:
        self.trial.model.train()

    def train_steps(self, plans):
        t = self.trial
        return feature_steps(self.table, plans, t.cfg.grad_accum_steps, t.pin, t.cfg.prefetch_batches)

    def logits(self, batch: FeatureBatch) -> torch.Tensor:
        with self.trial.autocast():
            return self.trial.model.head(batch.features).float()

    def eval_batches(self, rows: np.ndarray):
        return feature_eval_batches(self.table, rows, self.trial.cfg.eval_batch_size, self.trial.pin)


def batch_source(trial: Trial, stage: Stage) -> AudioSource | FeatureSource:
    """Cached features for a head-only stage when they give the same inputs, else audio."""
    frozen = stage.trainable == "head"
    blocker = feature_cache_blocker(trial) if frozen else "encoder trains"
    if blocker is None:
        table, status = frozen_features(trial)
        trial.logger.set_tags({f"feature_cache/stage{trial.state.stage_index}": status})
        return FeatureSource(trial, table)
    if frozen:
        trial.logger.set_tags({f"feature_cache/stage{trial.state.stage_index}": f"not used: {blocker}"})
    return AudioSource(trial, encoder_train_mode=not frozen or trial.cfg.frozen_encoder_dropout)


def feature_cache_blocker(trial: Trial) -> str | None:
    """Why a head-only stage cannot train from cached features (None: it can)."""
    cfg = trial.cfg
    if not cfg.cache_frozen_features:
        return "cache_frozen_features=False"
    if cfg.frozen_encoder_dropout:
        return "frozen_encoder_dropout=True (features change every step)"
    if trial.model.pooling != "mean":
        return f"pooling={trial.model.pooling} has weights that train"
    lengths = trial.data.reader.index.num_samples[trial.data.train_rows]
    if trial.max_samples > 0 and len(lengths) and lengths.max() > trial.max_samples:
        return "random crops (max_seconds) differ every epoch"
    return None


def frozen_features(trial: Trial) -> tuple[FeatureTable, str]:
    """Pooled features of the training speakers' clips (train + val), from the cache or computed once."""
    data, cfg = trial.data, trial.cfg
    rows = np.union1d(data.train_rows, data.eval_rows.get("val", data.train_rows[:0])).astype(np.int64)
    key = feature_key(
        encoder_fingerprint(trial.model.encoder), data.reader.content_hash, rows, trial.max_samples, trial.model.pooling
    )
    directory = Path(cfg.feature_cache_dir) if cfg.feature_cache_dir else default_cache_dir()
    features, status = cached_features(directory, key, rows, lambda: pooled_features(trial, rows))
    return FeatureTable(rows, features, data.reader.index.label[rows]), status


@torch.no_grad()
def pooled_features(trial: Trial, rows: np.ndarray) -> np.ndarray:
    """The eval-mode encoder's pooled output for every clip of sorted `rows`."""
    model = trial.model
    model.eval()
    features = np.zeros((len(rows), model.encoder.config.hidden_size), dtype=np.float32)
    source = AudioSource(trial, encoder_train_mode=False)
    for host_batch in source.eval_batches(rows):
        batch = host_batch.to(trial.device)
        values, mask = normalize_audio(batch.audio, batch.lengths)
        with trial.autocast():
            pooled = model.pool(values, attention_mask=mask).float()
        features[np.searchsorted(rows, batch.rows)] = pooled.cpu().numpy()
    return features


def evaluation_round(trial: Trial, source, learning_rate: float) -> None:
    """Val loss every `eval_every_steps`: adaptive lr, early stopping, best state, learning curves."""
    state = trial.state
    if "val" not in trial.data.eval_rows:
        state.train_losses.clear()
        return
    val = predict(trial, source, trial.data.eval_rows["val"])
    train_loss = float(torch.stack(state.train_losses).mean()) if state.train_losses else float("nan")
    state.train_losses.clear()
    if record_evaluation(state, trial.cfg, val.loss, float(np.mean(val.y_true == val.y_pred))):
        state.best_state = _clone_state(trial.model)
        state.best_snapshot = state.snapshot()
        state.best_unsaved = True
    trial.logger.log_metrics(
        {
            "train/loss": train_loss,
            "train/lr": learning_rate,
            "val/loss": val.loss,
            "val/accuracy": state.last_val_accuracy,
        },
        step=state.step,
    )


def _clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@dataclass(frozen=True)
class Predictions:
    loss: float  # mean cross-entropy
    y_true: np.ndarray
    y_pred: np.ndarray
    probabilities: np.ndarray  # [clips, classes]


@torch.no_grad()
def predict(trial: Trial, source, rows: np.ndarray) -> Predictions:
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


def report_progress(trial: Trial, reporter: Reporter) -> None:
    """Tune report at an epoch's end; the best model rides along when it changed since the last one."""
    state = trial.state
    if state.stage_index >= len(trial.stages):
        return  # the final report (with test metrics) comes from finish() after the best state is restored
    metrics = {
        "epoch": state.epoch,
        "step": state.step,
        "val/loss": state.last_val_loss,
        "val/accuracy": state.last_val_accuracy,
    }
    if not (trial.cfg.checkpoint_on_best and state.best_unsaved):
        reporter.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="emotion-best-") as directory:
        save_model(trial.model, directory, state_dict=state.best_state)
        save_train_state(directory, state.best_snapshot)
        state.best_unsaved = False
        reporter.report(metrics, checkpoint_dir=Path(directory))


def finish(trial: Trial, reporter: Reporter, started: float, setup_seconds: float) -> dict[str, float]:
    state, model = trial.state, trial.model
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    final = evaluate_all(trial)
    final.update(
        {
            "epoch": state.epoch,
            "step": state.step,
            "setup_seconds": setup_seconds,
            "trial_seconds": time.perf_counter() - started,
        }
    )
    trial.logger.log_metrics(final, step=state.step)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_model(model, Path(tmp) / "model")
        trial.logger.log_artifacts(str(model_dir), "model")
        save_train_state(model_dir, {**state.snapshot(), "finished": True})  # Tune's copy only
        reporter.report(final, checkpoint_dir=model_dir)
    return final


def evaluate_all(trial: Trial) -> dict[str, float]:
    """Full metric set, classification report and confusion matrix for every evaluation set."""
    source = AudioSource(trial, encoder_train_mode=False)
    metrics: dict[str, float] = {}
    for name, rows in trial.data.eval_rows.items():
        result = predict(trial, source, rows)
        metrics[f"{name}/loss"] = result.loss
        metrics.update(classification_metrics(name, result.y_true, result.y_pred))
        trial.logger.log_text(report_text(result.y_true, result.y_pred), f"classification_report_{name}.txt")
        trial.logger.log_figure(
            confusion_figure(confusion(result.y_true, result.y_pred), f"{name} (n={len(rows)})"),
            f"confusion_matrix_{name}.png",
        )
        # Calibration: ECE and a reliability diagram, to choose an abstention threshold for predict.
        metrics.update(calibration_metrics(name, result.y_true, result.probabilities))
        trial.logger.log_figure(
            reliability_figure(result.y_true, result.probabilities, f"{name} (n={len(rows)})"),
            f"reliability_{name}.png",
        )
    return metrics
