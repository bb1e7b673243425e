"""Stages with a frozen conv front end train from its cached output (workers.finetune.frontend_cache).

    FrameSource   the front end's output per clip from the memory-mapped cache -> feature projection,
                  SpecAugment, transformer, pooling, head (encoders.waveform.frames.encode_frames)

Which stages: a wav2vec2-family encoder (not Whisper) whose stage trains the transformer but not the front end
(`transformer`, `all_but_cnn`, `lora`; head-only stages have the pooled-output cache, workers.finetune.head_cache),
with a layer-normalised front end (a group-normalised one, wav2vec2-base's, depends on its batch's padding).
`frontend_cache_blocker` says why not otherwise, in one place: waveform augmentation changes a clip's samples
every epoch, so it turns the cache off.

Random crops become crops in frames: the clip's frames from the planned crop start's frame
(start sample // samples per frame), as many as the front end makes of `max_seconds` of audio; the front
end saw the whole (normalised) clip. Without crops a trial trains on the same values from the cache as
without it: the live path rounds a frozen front end's output to fp16 as the cache stores it
(encoders.waveform.frames.frontend_rounded), so only the conv's own float rounding, which varies with the
batch it runs in, separates them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from shards.batching import PlannedBatch, plan_batches, prefetch
from shards.reader import ClipIndex
from workers.core.phases import Phase, phase
from workers.finetune import encoders
from workers.finetune.augment import cache_blocker
from workers.finetune.batch_sources import AudioSource, Feeding
from workers.finetune.config import Stage, TrialConfig
from workers.finetune.encoders.waveform.forward import normalize_audio
from workers.finetune.encoders.waveform.frames import frame_hop, frames_for_samples, frontend_output
from workers.finetune.frontend_cache import (
    FRONTEND_DIR,
    CacheReport,
    FrontendTable,
    entry_key,
    frontend_fingerprint,
    open_frontend_cache,
)
from workers.finetune.head_cache import default_cache_dir
from workers.finetune.loader import _host, _to, split_plan
from workers.finetune.model import EmotionClassifier
from workers.vocabulary import Tag

FRONTEND_STAGES = ("transformer", "all_but_cnn", "lora")  # trainable parts that keep the conv front end frozen


def frontend_fixed_blocker(
    cfg: TrialConfig, model: EmotionClassifier, stage: Stage, device: torch.device
) -> str | None:
    """Why a stage's front-end output is no fixed function of the clip that can be handed over (None: it is)."""
    config = model.encoder.config
    if stage.trainable not in FRONTEND_STAGES:
        return f"trainable={stage.trainable} (the cache serves {', '.join(FRONTEND_STAGES)})"
    family = encoders.family_of(config)
    if family.log_mel_input or family.frontend != ("feature_extractor",):
        return f"{family.model_type} has no wav2vec2-style conv front end"
    if getattr(config, "feat_extract_norm", "layer") != "layer":
        return "a group-normalised front end depends on its batch's padding"
    if any(p.requires_grad for p in model.encoder.feature_extractor.parameters()):
        return "the front end trains"
    if cfg.compile and device.type == "cuda":
        return "compile=True (handing the output over would recompile the encoder)"
    return None


def frontend_cache_blocker(
    cfg: TrialConfig, model: EmotionClassifier, stage: Stage, device: torch.device
) -> str | None:
    """Why a stage cannot train from the cached front end (None: it can)."""
    augmented = cache_blocker(cfg)  # the rule every cache of training audio follows
    if augmented:
        return augmented
    if not cfg.cache_frontend:
        return "cache_frontend=False"
    return frontend_fixed_blocker(cfg, model, stage, device)


@dataclass(frozen=True)
class FrameBatch:
    features: torch.Tensor  # float16 [batch, frames, channels]: the front end's output, zero-padded
    frame_lengths: torch.Tensor  # int64 [batch]
    labels: torch.Tensor  # int64 [batch]
    rows: np.ndarray
    hop: int = 0  # audio samples per frame

    def audio_samples(self) -> int:
        """The audio the batch stands for (what a throughput figure counts), in samples."""
        return int(self.frame_lengths.sum()) * self.hop

    def to(self, device: torch.device) -> FrameBatch:
        return replace(
            self,
            features=_to(self.features, device),
            frame_lengths=_to(self.frame_lengths, device),
            labels=_to(self.labels, device),
        )


@dataclass(frozen=True)
class FrameCrop:
    """Training crops in frames: clips over `max_samples` keep `frames` frames from their crop start's frame."""

    max_samples: int  # 0: whole clips
    frames: int
    hop: int  # samples per frame


def frame_batch(table: FrontendTable, index: ClipIndex, plan: PlannedBatch, crop: FrameCrop, pin: bool) -> FrameBatch:
    clips = []
    for position, row in enumerate(plan.rows):
        clip = table.clip(row)
        if crop.max_samples > 0 and index.num_samples[row] > crop.max_samples:
            start = 0 if plan.crop_starts is None else int(plan.crop_starts[position]) // crop.hop
            start = max(0, min(start, len(clip) - crop.frames))
            clip = clip[start : start + crop.frames]
        clips.append(clip)
    lengths = np.array([len(c) for c in clips], dtype=np.int64)
    features = np.zeros((len(clips), int(lengths.max(initial=1)), table.channels), dtype=np.float16)
    for i, clip in enumerate(clips):
        features[i, : len(clip)] = clip
    labels = index.label[plan.rows]
    rows = np.asarray(plan.rows)
    return FrameBatch(_host(features, pin), _host(lengths, pin), _host(labels, pin), rows, crop.hop)


class FrameSource:
    """The frozen front end's cached output through the rest of the model."""

    def __init__(
        self, model: EmotionClassifier, table: FrontendTable, index: ClipIndex, crop: FrameCrop, feeding: Feeding
    ):
        self.model = model
        self.table = table
        self.index = index
        self.crop = crop
        self.feeding = feeding

    def train_mode(self) -> None:
        self.model.train()

    def train_steps(self, plans: Sequence[PlannedBatch]) -> Iterator[list[FrameBatch]]:
        f = self.feeding

        def produce():
            for plan in plans:
                parts = split_plan(plan, f.grad_accum_steps)
                yield [frame_batch(self.table, self.index, part, self.crop, f.pin) for part in parts]

        return prefetch(produce(), f.prefetch_batches)

    def logits(self, batch: FrameBatch) -> torch.Tensor:
        with self.feeding.autocast():
            return self.model.classify_frames(batch.features, batch.frame_lengths).float()

    def eval_batches(self, rows: np.ndarray) -> Iterator[FrameBatch]:
        """Whole clips, in the audio path's evaluation batches (sorted by length)."""
        f = self.feeding
        whole = replace(self.crop, max_samples=0)
        plans = plan_batches(self.index, rows, f.eval_batch_size)
        return prefetch((frame_batch(self.table, self.index, plan, whole, f.pin) for plan in plans), f.prefetch_batches)


def precision(feeding: Feeding) -> str:
    """What the front end computes in: part of the cache's key (bf16 autocast and fp32 give other values)."""
    return f"{feeding.device.type}-{'bf16' if feeding.device.type == 'cuda' and feeding.bf16 else 'fp32'}"


def frontend_source(audio: AudioSource, rows: np.ndarray, cache_dir: str) -> tuple[FrameSource, CacheReport]:
    """A FrameSource over `rows` of the audio source's corpus: cached clips read, missing ones computed once."""
    model, reader, feeding = audio.model, audio.reader, audio.feeding
    encoder = model.encoder
    key = entry_key(
        frontend_fingerprint(encoder.feature_extractor.state_dict(), encoder.config),
        precision(feeding),
        reader.content_hash,
    )
    directory = (Path(cache_dir) if cache_dir else default_cache_dir()) / FRONTEND_DIR

    @torch.no_grad()
    def compute(missing: np.ndarray):
        model.eval()
        with phase(Phase.FEATURE_PASS, source=audio, rows=missing):
            for host_batch in audio.eval_batches(missing):
                batch = host_batch.to(feeding.device)
                values, _ = normalize_audio(batch.audio, batch.lengths)
                with feeding.autocast():
                    output = frontend_output(encoder, values).cpu().numpy()
                frames = frames_for_samples(encoder.config, host_batch.lengths.numpy())
                yield host_batch.rows, [output[i, :n] for i, n in enumerate(frames)]

    channels = int(encoder.config.conv_dim[-1])
    table, report = open_frontend_cache(directory, key, rows, channels, compute)
    crop_frames = int(frames_for_samples(encoder.config, audio.max_samples)) if audio.max_samples > 0 else 0
    crop = FrameCrop(audio.max_samples, crop_frames, frame_hop(encoder.config))
    return FrameSource(model, table, reader.index, crop, feeding), report


def frontend_batches(trial, stage: Stage, audio: AudioSource):
    """The batch source of a stage that trains the encoder (`trial`: the recipe's TrainingContext): the cached
    front end when it may serve the stage, else `audio` (rounding a frozen front end's output as the cache would)."""
    cfg, model, data = trial.cfg, trial.model, trial.data
    audio.round_frontend = frontend_fixed_blocker(cfg, model, stage, trial.device) is None
    tag = Tag.frontend_cache(trial.state.stage_index)
    blocker = frontend_cache_blocker(cfg, model, stage, trial.device)
    if blocker is not None:
        trial.logger.set_tags({tag: f"not used: {blocker}"})
        return audio
    # Train and val clips of the training speakers: the stage trains on one and is evaluated on the other.
    rows = np.union1d(data.train_rows, data.eval_rows.get("val", data.train_rows[:0])).astype(np.int64)
    with phase(Phase.FRONTEND_CACHE):
        source, report = frontend_source(audio, rows, cfg.feature_cache_dir)
    trial.logger.set_tags({tag: report.describe()})
    return source
