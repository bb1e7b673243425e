"""From a shard directory to training batches: holdout, language mixing, length-bucketed batches.

Batches stay int16 with their lengths; normalisation happens on the device (workers.finetune.model).
An epoch is planned up front (`plan_batches`: which rows go together, where each crop starts),
then collated; so a plan can be resumed part-way and collated on a background thread (`prefetch`).
"""

from __future__ import annotations

import queue
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from shards.reader import ClipIndex, ShardReader


@dataclass(frozen=True)
class Batch:
    audio: np.ndarray  # int16 [batch, max_samples], zero-padded
    lengths: np.ndarray  # int64 [batch], samples of each clip
    labels: np.ndarray  # int64 [batch], index into the corpus's labels (ShardReader.labels)
    rows: np.ndarray  # reader rows of the clips


def holdout(index: ClipIndex, rows: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split rows into (train, validation) by a stable hash of the utterance id.

    A hash rather than a shuffle: the same clip stays on the same side whatever else is selected.
    A small corpus whose hashes put no clip below the fraction still gets one validation clip (the
    lowest key): the validation metric is what a sweep ranks its trials by.
    """
    if fraction <= 0:
        return rows, rows[:0]
    keys = np.array([zlib.crc32(f"{seed}:{u}".encode()) for u in index.utterance_id[rows]], dtype=np.uint64)
    is_val = keys < np.uint64(fraction * 2**32)
    if not is_val.any() and len(rows) > 1:
        is_val[np.argmin(keys)] = True
    return rows[~is_val], rows[is_val]


def mix_languages(
    index: ClipIndex,
    rows: np.ndarray,
    source_fraction: float | None,
    rng: np.random.Generator,
    source: str = "en",
    class_uniform: bool = False,
) -> np.ndarray:
    """One epoch's rows with the `source` language's clips drawn at `source_fraction` (None: as the rows come).

    Each slot of the epoch is from `source` with probability `source_fraction` (exact in
    expectation), else from the other languages of `rows`; within each side, clips are drawn
    without replacement, cycling when a pool runs out. The epoch keeps the number of training rows.
    The paper's English:Mandarin mix is source='en'.
    `class_uniform` (balanced sampling): every class present gets the same share of the epoch (of each
    side, when mixing): `draw_class_uniform`.
    """
    draw = (lambda pool, count: draw_class_uniform(index.label, pool, count, rng)) if class_uniform else None
    if source_fraction is None:
        return rng.permutation(rows) if draw is None else draw(rows, len(rows))
    draw = draw or (lambda pool, count: _draw_cycling(pool, count, rng))
    from_source = rows[index.language[rows] == source]
    other = rows[index.language[rows] != source]
    if (source_fraction > 0 and len(from_source) == 0) or (source_fraction < 1 and len(other) == 0):
        others = sorted(set(index.language[other]))
        raise ValueError(
            f"mixing {source!r} at {source_fraction} needs {source!r} and another language among the training "
            f"speakers; found {len(from_source)} {source!r} clips and {len(other)} of other languages {others}"
        )
    is_source = rng.binomial(1, source_fraction, size=len(rows)).astype(bool)
    picked = np.empty(len(rows), dtype=rows.dtype)
    picked[is_source] = draw(from_source, int(is_source.sum()))
    picked[~is_source] = draw(other, int((~is_source).sum()))
    return picked


def draw_class_uniform(labels: np.ndarray, pool: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` rows of `pool`, the classes present (by `labels[row]`) drawn equally often, in random order.

    Each class gets count // k slots, and the count % k left over go to distinct classes picked at
    random, so class counts differ by at most one. Within a class, clips are drawn without replacement,
    cycling when its pool runs out: a small class repeats its clips, a large one is subsampled.
    """
    if count == 0 or len(pool) == 0:
        return pool[:0]
    classes = np.unique(labels[pool])
    per_class = np.full(len(classes), count // len(classes))
    per_class[rng.choice(len(classes), size=count % len(classes), replace=False)] += 1
    drawn = [_draw_cycling(pool[labels[pool] == c], int(n), rng) for c, n in zip(classes, per_class)]
    return rng.permutation(np.concatenate(drawn))


def _draw_cycling(pool: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    if count == 0:
        return pool[:0]
    repeats = -(-count // len(pool))
    return np.concatenate([rng.permutation(pool) for _ in range(repeats)])[:count]


def bucket_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None, window_batches: int = 32
) -> list[np.ndarray]:
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


@dataclass(frozen=True)
class PlannedBatch:
    """Which clips form one batch, and where each clip's crop starts (None: whole clips or crop at 0).

    `augment_seeds`: one seed per clip for its augmentation (training with augmentation only; None:
    the clips are never transformed). Per clip, so a clip's audio does not depend on how its batch is cut.
    """

    rows: np.ndarray
    crop_starts: np.ndarray | None = None
    augment_seeds: np.ndarray | None = None

    def select(self, positions) -> PlannedBatch:
        """The batch of the clips at `positions` (an index array or a slice), with their crops and seeds."""

        def pick(values):
            return None if values is None else values[positions]

        return PlannedBatch(self.rows[positions], pick(self.crop_starts), pick(self.augment_seeds))


def plan_batches(
    index: ClipIndex,
    rows: np.ndarray,
    batch_size: int,
    rng: np.random.Generator | None = None,
    max_samples: int = 0,
    seed_clips: bool = False,
) -> list[PlannedBatch]:
    """Length-bucketed batches over `rows` (shuffled with an rng, sorted without), crops drawn up front;
    with `seed_clips` (and an rng) an augmentation seed per clip, drawn after everything else.

    All of an epoch's randomness is drawn here, so the rng state before this call fixes the epoch.
    """
    lengths = index.num_samples[rows]
    cropped = np.minimum(lengths, max_samples) if max_samples > 0 else lengths
    plans = []
    for positions in bucket_batches(cropped, batch_size, rng):
        starts = None
        if max_samples > 0 and rng is not None:
            slack = np.maximum(lengths[positions] - max_samples, 0)
            starts = rng.integers(0, slack + 1)
        plans.append(PlannedBatch(rows[positions], starts))
    if seed_clips and rng is not None:
        plans = [PlannedBatch(p.rows, p.crop_starts, rng.integers(0, 2**63, size=len(p.rows))) for p in plans]
    return plans


# A per-clip transform (workers.finetune.augment): int16 clip and its seed -> int16 clip (any length).
ClipTransform = Callable[[np.ndarray, int], np.ndarray]


def collate(
    reader: ShardReader,
    rows: np.ndarray,
    max_samples: int = 0,
    crop_starts: np.ndarray | None = None,
    transform: ClipTransform | None = None,
    seeds: np.ndarray | None = None,
) -> Batch:
    """Pad the clips of `rows` into one int16 array; crop to `max_samples` when set.

    Crops start at `crop_starts` (planned with the batch: plan_batches), else at the clip's start.
    `transform` (augmentation) applies to each cropped clip with its seed from `seeds`.
    """
    clips = [reader.audio(int(r)) for r in rows]
    if max_samples > 0:
        starts = crop_starts if crop_starts is not None else np.zeros(len(clips), dtype=np.int64)
        clips = [c[int(s) : int(s) + max_samples] for c, s in zip(clips, starts)]
    if transform is not None:
        if seeds is None:
            raise ValueError("a clip transform needs a seed per clip (plan_batches(..., seed_clips=True))")
        clips = [transform(c, int(s)) for c, s in zip(clips, seeds)]
    lengths = np.array([len(c) for c in clips], dtype=np.int64)
    audio = np.zeros((len(clips), int(lengths.max(initial=1))), dtype=np.int16)
    for i, clip in enumerate(clips):
        audio[i, : len(clip)] = clip
    return Batch(audio=audio, lengths=lengths, labels=reader.index.label[rows], rows=np.asarray(rows))


def collate_planned(
    reader: ShardReader, plan: PlannedBatch, max_samples: int = 0, transform: ClipTransform | None = None
) -> Batch:
    """The planned batch; `transform` applies only to a plan with augmentation seeds (training plans drawn
    with seed_clips): an evaluation plan never has them, so its clips are never transformed."""
    if plan.augment_seeds is None:
        transform = None
    return collate(reader, plan.rows, max_samples, plan.crop_starts, transform, plan.augment_seeds)


def iter_batches(
    reader: ShardReader, rows: np.ndarray, batch_size: int, rng: np.random.Generator | None = None, max_samples: int = 0
) -> Iterator[Batch]:
    """Length-bucketed batches over `rows` (shuffled with an rng, sorted without)."""
    for plan in plan_batches(reader.index, rows, batch_size, rng, max_samples):
        yield collate_planned(reader, plan, max_samples)


T = TypeVar("T")


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


_DONE = object()


def prefetch(items: Iterable[T], depth: int) -> Iterator[T]:
    """Yield `items` as a background thread produces them, at most `depth` ahead.

    The queue bounds memory (depth items waiting, one in each thread's hands). Collating is numpy
    copies that release the GIL, so the next batches are ready while the device works on this one.
    An error in the producer is raised here; closing the iterator early stops the producer.
    depth <= 0: no thread, items are produced in the caller's thread.
    """
    if depth <= 0:
        yield from items
        return
    waiting: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                waiting.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as error:  # noqa: BLE001 - re-raised in the consumer
            put(_Failed(error))

    producer = threading.Thread(target=produce, name="batch-prefetch", daemon=True)
    producer.start()
    try:
        while True:
            item = waiting.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        producer.join(timeout=5.0)
