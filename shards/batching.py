"""From a shard directory to training batches: holdout, en/zh mixing, length-bucketed batches.

Batches stay int16 with their lengths; normalisation happens on the device (workers.model).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from shards.reader import ClipIndex, ShardReader


@dataclass(frozen=True)
class Batch:
    audio: np.ndarray  # int16 [batch, max_samples], zero-padded
    lengths: np.ndarray  # int64 [batch], samples of each clip
    labels: np.ndarray  # int64 [batch], index into EMOTIONS
    rows: np.ndarray  # reader rows of the clips

    @property
    def padded_fraction(self) -> float:
        return 1.0 - self.lengths.sum() / max(self.audio.size, 1)


def holdout(index: ClipIndex, rows: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split rows into (train, validation) by a stable hash of the utterance id.

    A hash rather than a shuffle: the same clip stays on the same side whatever else is selected.
    """
    if fraction <= 0:
        return rows, rows[:0]
    keys = np.array([zlib.crc32(f"{seed}:{u}".encode()) for u in index.utterance_id[rows]], dtype=np.uint64)
    is_val = keys < np.uint64(fraction * 2**32)
    return rows[~is_val], rows[is_val]


def mix_languages(index: ClipIndex, rows: np.ndarray, english_fraction: float | None,
                  rng: np.random.Generator) -> np.ndarray:
    """One epoch's rows with English drawn at `english_fraction` (None: as the rows come).

    Each slot of the epoch is English with probability `english_fraction` (exact in expectation);
    within a language, clips are drawn without replacement, cycling when a pool runs out. The
    epoch keeps the number of training rows.
    """
    if english_fraction is None:
        return rng.permutation(rows)
    english = rows[index.language[rows] == "en"]
    other = rows[index.language[rows] != "en"]
    if (english_fraction > 0 and len(english) == 0) or (english_fraction < 1 and len(other) == 0):
        raise ValueError(
            f"english_fraction={english_fraction} needs both languages among the training speakers; "
            f"found {len(english)} English and {len(other)} other clips"
        )
    num_english = rng.binomial(1, english_fraction, size=len(rows)).astype(bool)
    picked = np.empty(len(rows), dtype=rows.dtype)
    picked[num_english] = _draw_cycling(english, int(num_english.sum()), rng)
    picked[~num_english] = _draw_cycling(other, int((~num_english).sum()), rng)
    return picked


def _draw_cycling(pool: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    if count == 0:
        return pool[:0]
    repeats = -(-count // len(pool))
    return np.concatenate([rng.permutation(pool) for _ in range(repeats)])[:count]


def bucket_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None,
                   window_batches: int = 32) -> list[np.ndarray]:
    """Positions grouped into batches of similar length.

    Shuffle, sort by length within windows of `window_batches` batches, cut into batches, then
    shuffle the batch order: padding drops to a few percent while every epoch still differs.
    Without an rng, batches follow the sorted order (evaluation: deterministic, least padding).
    """
    positions = np.arange(len(lengths))
    if rng is None:
        order = positions[np.argsort(lengths, kind="stable")]
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    positions = rng.permutation(positions)
    window = batch_size * window_batches
    batches = []
    for start in range(0, len(positions), window):
        chunk = positions[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(reader: ShardReader, rows: np.ndarray, max_samples: int = 0,
            rng: np.random.Generator | None = None) -> Batch:
    """Pad the clips of `rows` into one int16 array; crop to `max_samples` when set (random crop with rng)."""
    clips = [reader.audio(int(r)) for r in rows]
    if max_samples > 0:
        clips = [_crop(c, max_samples, rng) for c in clips]
    lengths = np.array([len(c) for c in clips], dtype=np.int64)
    audio = np.zeros((len(clips), int(lengths.max(initial=1))), dtype=np.int16)
    for i, clip in enumerate(clips):
        audio[i, : len(clip)] = clip
    return Batch(audio=audio, lengths=lengths, labels=reader.index.label[rows], rows=np.asarray(rows))


def _crop(clip: np.ndarray, max_samples: int, rng: np.random.Generator | None) -> np.ndarray:
    if len(clip) <= max_samples:
        return clip
    start = int(rng.integers(0, len(clip) - max_samples + 1)) if rng is not None else 0
    return clip[start : start + max_samples]


def iter_batches(reader: ShardReader, rows: np.ndarray, batch_size: int,
                 rng: np.random.Generator | None = None, max_samples: int = 0) -> Iterator[Batch]:
    """Length-bucketed batches over `rows` (shuffled with an rng, sorted without)."""
    lengths = reader.index.num_samples[rows]
    if max_samples > 0:
        lengths = np.minimum(lengths, max_samples)
    for positions in bucket_batches(lengths, batch_size, rng):
        yield collate(reader, rows[positions], max_samples, rng)
