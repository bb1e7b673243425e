"""Where a stage's batches come from, behind one interface (`BatchSource`):

    AudioSource    clips from the shards, through the whole model
    FeatureSource  cached pooled features of the frozen encoder, straight into the head

A head-only stage trains from cached features when they are the very inputs the audio path would
give the head (`feature_cache_blocker` says why not otherwise); evaluation always goes through audio.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from shards.batching import ClipTransform, PlannedBatch
from shards.reader import ShardReader
from workers.core.phases import Phase, phase
from workers.finetune.augment import cache_blocker
from workers.finetune.config import TrialConfig
from workers.finetune.encoders.waveform.frames import frontend_rounded
from workers.finetune.head_cache import cached_features, default_cache_dir, encoder_fingerprint, feature_key
from workers.finetune.loader import (
    AudioBatch,
    FeatureBatch,
    FeatureTable,
    audio_eval_batches,
    audio_steps,
    feature_eval_batches,
    feature_steps,
)
from workers.finetune.model import EmotionClassifier, eval_peak_bytes

CPU_EVAL_BATCH_SIZE = 16  # measured best on a CPU (`python -m bench profile`): larger batches pad more
MAX_EVAL_BATCH_SIZE = 256
EVAL_MEMORY_SHARE = 0.5  # of the GPU memory free at setup: the optimizer's state and other trials need the rest


@dataclass(frozen=True)
class Feeding:
    """How batches reach the device and the model, whichever the source."""

    device: torch.device
    bf16: bool  # bfloat16 autocast (CUDA only)
    grad_accum_steps: int  # micro-batches per optimizer step
    prefetch_batches: int  # collated ahead on a background thread
    eval_batch_size: int

    @classmethod
    def from_config(
        cls, cfg: TrialConfig, device: torch.device, encoder_config=None, longest_eval_seconds: float = 0.0
    ) -> Feeding:
        """`encoder_config` and the longest evaluation clip size an automatic (0) eval_batch_size."""
        eval_batch = eval_batch_size(cfg.eval_batch_size, device, encoder_config, longest_eval_seconds, cfg.bf16)
        return cls(device, cfg.bf16, cfg.grad_accum_steps, cfg.prefetch_batches, eval_batch)

    @property
    def pin(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        enabled = self.device.type == "cuda" and self.bf16
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled) if enabled else nullcontext()


def eval_batch_size(
    requested: int,
    device: torch.device,
    encoder_config,
    longest_seconds: float,
    bf16: bool = True,
    free_bytes: int | None = None,
) -> int:
    """Clips per evaluation batch: as requested, or (0) as many of the longest clip as fit in a share of
    the free GPU memory (workers.finetune.model.eval_peak_bytes); CPU_EVAL_BATCH_SIZE on a CPU or for an encoder
    the estimate does not describe."""
    if requested > 0:
        return requested
    if device.type != "cuda" or encoder_config is None or longest_seconds <= 0:
        return CPU_EVAL_BATCH_SIZE
    try:
        per_clip = eval_peak_bytes(encoder_config, 1, longest_seconds, bytes_per_value=2 if bf16 else 4)
    except (AttributeError, TypeError, IndexError):  # a family without wav2vec2's conv/attention fields
        return CPU_EVAL_BATCH_SIZE
    free = free_cuda_bytes(device) if free_bytes is None else free_bytes
    return int(min(MAX_EVAL_BATCH_SIZE, max(1, free * EVAL_MEMORY_SHARE // max(per_clip, 1))))


def free_cuda_bytes(device: torch.device) -> int:
    """Free device memory, counting what this process's allocator caches but does not use."""
    free, _ = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


class BatchSource(Protocol):
    """What the training loop and evaluation need from a source of batches."""

    def train_mode(self) -> None:
        """Put the model in the mode this source trains it in."""

    def train_steps(self, plans: Sequence[PlannedBatch]) -> Iterator[list[AudioBatch | FeatureBatch]]:
        """One list of micro-batches per optimizer step, one step per planned batch (close it when done)."""

    def logits(self, batch: AudioBatch | FeatureBatch) -> torch.Tensor:
        """The model's float32 logits for a batch already on the device."""

    def eval_batches(self, rows: np.ndarray) -> Iterator[AudioBatch | FeatureBatch]:
        """Every clip of `rows` once, in evaluation batches."""


class AudioSource:
    """Clips from the shards through the whole model."""

    def __init__(
        self,
        model: EmotionClassifier,
        reader: ShardReader,
        max_samples: int,
        feeding: Feeding,
        encoder_train_mode: bool,
        augment: ClipTransform | None = None,
    ):
        self.model = model
        self.reader = reader
        self.max_samples = max_samples  # training crops (0: whole clips)
        self.feeding = feeding
        self.encoder_train_mode = encoder_train_mode
        # A frozen conv front end's output held at fp16, as its cache stores it (workers.finetune.frame_source).
        self.round_frontend = False
        self.augment = augment  # training clips only (workers.finetune.augment); eval_batches never augments

    def train_mode(self) -> None:
        self.model.train()
        if not self.encoder_train_mode:
            self.model.encoder.eval()  # frozen: deterministic features, as the cached path

    def train_steps(self, plans: Sequence[PlannedBatch]) -> Iterator[list[AudioBatch]]:
        f = self.feeding
        return audio_steps(
            self.reader, plans, self.max_samples, f.grad_accum_steps, f.pin, f.prefetch_batches, self.augment
        )

    def logits(self, batch: AudioBatch) -> torch.Tensor:
        rounded = frontend_rounded(self.model.encoder) if self.round_frontend else nullcontext()
        with self.feeding.autocast(), rounded:
            return self.model.classify(batch.audio, batch.lengths).float()

    def eval_batches(self, rows: np.ndarray) -> Iterator[AudioBatch]:
        f = self.feeding
        return audio_eval_batches(self.reader, rows, f.eval_batch_size, f.pin, f.prefetch_batches)

    @torch.no_grad()
    def pooled_features(self, rows: np.ndarray) -> np.ndarray:
        """The eval-mode encoder's pooled output for every clip of sorted `rows`."""
        self.model.eval()
        features = np.zeros((len(rows), self.model.head.dense.in_features), dtype=np.float32)
        with phase(Phase.FEATURE_PASS, source=self, rows=rows):
            for host_batch in self.eval_batches(rows):
                batch = host_batch.to(self.feeding.device)
                with self.feeding.autocast():
                    pooled = self.model.pool_audio(batch.audio, batch.lengths).float()
                features[np.searchsorted(rows, batch.rows)] = pooled.cpu().numpy()
        return features


class FeatureSource:
    """Cached pooled features of the frozen encoder, straight into the head."""

    def __init__(self, model: EmotionClassifier, table: FeatureTable, feeding: Feeding):
        self.model = model
        self.table = table
        self.feeding = feeding

    def train_mode(self) -> None:
        self.model.train()

    def train_steps(self, plans: Sequence[PlannedBatch]) -> Iterator[list[FeatureBatch]]:
        f = self.feeding
        return feature_steps(self.table, plans, f.grad_accum_steps, f.pin, f.prefetch_batches)

    def logits(self, batch: FeatureBatch) -> torch.Tensor:
        with self.feeding.autocast():
            return self.model.outputs(batch.features).float()

    def eval_batches(self, rows: np.ndarray) -> Iterator[FeatureBatch]:
        return feature_eval_batches(self.table, rows, self.feeding.eval_batch_size, self.feeding.pin)


def feature_cache_blocker(
    cfg: TrialConfig, model: EmotionClassifier, reader: ShardReader, train_rows: np.ndarray, max_samples: int
) -> str | None:
    """Why a head-only stage cannot train from cached features (None: it can)."""
    if not cfg.cache_frozen_features:
        return "cache_frozen_features=False"
    if (augmented := cache_blocker(cfg)) is not None:  # augmentation on: no cached training features
        return augmented
    if cfg.frozen_encoder_dropout:
        return "frozen_encoder_dropout=True (features change every step)"
    if model.pooling != "mean":
        return f"pooling={model.pooling} has weights that train"
    lengths = reader.index.num_samples[train_rows]
    if max_samples > 0 and len(lengths) and lengths.max() > max_samples:
        return "random crops (max_seconds) differ every epoch"
    return None


def frozen_features(audio: AudioSource, rows: np.ndarray, cache_dir: str) -> tuple[FeatureSource, str]:
    """A FeatureSource over sorted `rows`, from the cache or computed once; and the cache's status."""
    model, reader = audio.model, audio.reader
    fingerprint = encoder_fingerprint(model.encoder)
    key = feature_key(
        model.family, fingerprint, model.layer, model.pooling, reader.content_hash, rows, audio.max_samples
    )
    directory = Path(cache_dir) if cache_dir else default_cache_dir()
    features, status = cached_features(directory, key, rows, lambda: audio.pooled_features(rows))
    return FeatureSource(model, FeatureTable(rows, features, reader.index.label[rows]), audio.feeding), status
