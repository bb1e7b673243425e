"""Batches onto the device without making it wait.

A background thread (shards.batching.prefetch) collates planned batches into int16 tensors, pinned
on CUDA; the training thread copies them with non_blocking=True and normalises on the device.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch

from shards.batching import ClipTransform, PlannedBatch, collate_planned, plan_batches, prefetch
from shards.reader import ShardReader


def _host(array: np.ndarray, pin: bool) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor.pin_memory() if pin else tensor


def _to(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    return tensor.to(device, non_blocking=True)


@dataclass(frozen=True)
class AudioBatch:
    audio: torch.Tensor  # int16 [batch, samples]
    lengths: torch.Tensor  # int64 [batch]
    labels: torch.Tensor  # int64 [batch]
    rows: np.ndarray

    def audio_samples(self) -> int:
        """The audio the batch stands for (what a throughput figure counts), in samples."""
        return int(self.lengths.sum())

    def to(self, device: torch.device) -> AudioBatch:
        return replace(
            self, audio=_to(self.audio, device), lengths=_to(self.lengths, device), labels=_to(self.labels, device)
        )


@dataclass(frozen=True)
class FeatureBatch:
    features: torch.Tensor  # float32 [batch, hidden]: pooled outputs of a frozen encoder
    labels: torch.Tensor
    rows: np.ndarray

    def to(self, device: torch.device) -> FeatureBatch:
        return replace(self, features=_to(self.features, device), labels=_to(self.labels, device))


def split_plan(plan: PlannedBatch, parts: int) -> list[PlannedBatch]:
    """A step's batch cut into `parts` micro-batches (gradient accumulation); no empty ones."""
    if parts <= 1:
        return [plan]
    pieces = np.array_split(np.arange(len(plan.rows)), parts)
    return [plan.select(p) for p in pieces if len(p)]


def audio_batch(
    reader: ShardReader, plan: PlannedBatch, max_samples: int, pin: bool, augment: ClipTransform | None = None
) -> AudioBatch:
    batch = collate_planned(reader, plan, max_samples, augment)
    return AudioBatch(_host(batch.audio, pin), _host(batch.lengths, pin), _host(batch.labels, pin), batch.rows)


def audio_steps(
    reader: ShardReader,
    plans: Iterable[PlannedBatch],
    max_samples: int,
    grad_accum_steps: int,
    pin: bool,
    depth: int,
    augment: ClipTransform | None = None,
) -> Iterator[list[AudioBatch]]:
    """One list of micro-batches per optimizer step, collated `depth` steps ahead; training clips augmented
    by `augment` (workers.finetune.augment) when their plans carry seeds."""

    def produce():
        for plan in plans:
            parts = split_plan(plan, grad_accum_steps)
            yield [audio_batch(reader, part, max_samples, pin, augment) for part in parts]

    return prefetch(produce(), depth)


def audio_eval_batches(
    reader: ShardReader, rows: np.ndarray, batch_size: int, pin: bool, depth: int
) -> Iterator[AudioBatch]:
    """Sorted by length (least padding), whole clips."""
    plans = plan_batches(reader.index, rows, batch_size)
    return prefetch((audio_batch(reader, plan, 0, pin) for plan in plans), depth)


@dataclass(frozen=True)
class FeatureTable:
    """Pooled features of a frozen encoder, one row per clip, `rows` sorted."""

    rows: np.ndarray
    features: np.ndarray  # float32 [len(rows), hidden]
    labels: np.ndarray

    def lookup(self, rows: np.ndarray) -> np.ndarray:
        positions = np.searchsorted(self.rows, rows)
        if np.any(positions >= len(self.rows)) or np.any(self.rows[np.minimum(positions, len(self.rows) - 1)] != rows):
            raise KeyError("rows outside the cached feature table")
        return positions

    def batch(self, rows: np.ndarray, pin: bool) -> FeatureBatch:
        positions = self.lookup(rows)
        return FeatureBatch(_host(self.features[positions], pin), _host(self.labels[positions], pin), rows)


def feature_steps(
    table: FeatureTable, plans: Iterable[PlannedBatch], grad_accum_steps: int, pin: bool, depth: int
) -> Iterator[list[FeatureBatch]]:
    def produce():
        for plan in plans:
            yield [table.batch(part.rows, pin) for part in split_plan(plan, grad_accum_steps)]

    return prefetch(produce(), depth)


def feature_eval_batches(table: FeatureTable, rows: np.ndarray, batch_size: int, pin: bool) -> Iterator[FeatureBatch]:
    for start in range(0, len(rows), batch_size):
        yield table.batch(rows[start : start + batch_size], pin)
