"""One corpus's labels in terms of another's: held-out sets from other corpora (cross-corpus tests).

A model trained on corpus A (labels `target`) is tested on corpus B (labels `source`): each of B's
labels maps to one of A's by name, case-insensitively ('Angry' = 'angry'), or through an explicit
map ('angry=ang'). Clips whose label maps to none (RAVDESS's 'calm' for a 4-class IEMOCAP model)
are left out of the set and counted, so the number of clips tested is never silently smaller.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shards.reader import ShardReader


class LabelMapError(ValueError):
    """A label map that names a label the corpus lacks, or a set with no label in common."""


def map_labels(
    source: Sequence[str], target: Sequence[str], explicit: dict[str, str] | None = None
) -> dict[str, str | None]:
    """Each source label -> the target label it counts as (None: none).

    `explicit` ('angry' -> 'ang', keys and values case-insensitive) wins over equal names. An
    explicit target that is not a target label is an error; explicit keys that are not source
    labels are allowed (one map can serve several held-out corpora).
    """
    by_folded = {t.casefold(): t for t in target}
    chosen = {k.casefold(): v for k, v in (explicit or {}).items()}
    unknown = sorted(v for v in chosen.values() if v.casefold() not in by_folded)
    if unknown:
        raise LabelMapError(f"label map targets {unknown} are not labels of the training corpus {tuple(target)}")
    return {label: by_folded.get(chosen.get(label.casefold(), label).casefold()) for label in source}


@dataclass(frozen=True)
class MappedLabels:
    """What a label map does to one corpus: where each label goes and how many clips it leaves out."""

    mapping: dict[str, str | None]  # source label -> target label or None
    unmapped_clips: dict[str, int]  # source label -> clips left out (only labels that map to none)
    mapped_clips: int

    @property
    def num_unmapped(self) -> int:
        return sum(self.unmapped_clips.values())

    def describe(self) -> str:
        """'angry->ang, happy->hap; left out: calm 4, surprised 2' for logs and tags."""
        pairs = ", ".join(f"{s}->{t}" for s, t in self.mapping.items() if t is not None)
        dropped = ", ".join(f"{label} {count}" for label, count in self.unmapped_clips.items())
        return pairs + (f"; left out: {dropped}" if dropped else "")


def mapped_labels(reader: ShardReader, target: Sequence[str], explicit: dict[str, str] | None = None) -> MappedLabels:
    mapping = map_labels(reader.labels, target, explicit)
    counts = np.bincount(reader.index.label, minlength=len(reader.labels))
    unmapped = {label: int(counts[i]) for i, label in enumerate(reader.labels) if mapping[label] is None and counts[i]}
    mapped = int(sum(counts[i] for i, label in enumerate(reader.labels) if mapping[label] is not None))
    return MappedLabels(mapping, unmapped, mapped)


class RelabelledReader:
    """A reader of another corpus whose `index.label` indexes into `target` labels (-1: unmappable).

    Duck-types ShardReader for collating batches (`index`, `audio`, `labels`, `content_hash`);
    `rows` are the clips whose label maps, the only ones to evaluate.
    """

    def __init__(self, reader: ShardReader, target: Sequence[str], explicit: dict[str, str] | None = None):
        self.reader = reader
        self.data_dir: Path = reader.data_dir
        self.labels = tuple(target)
        self.mapped = mapped_labels(reader, target, explicit)
        position = {label: i for i, label in enumerate(self.labels)}
        codes = np.array([position.get(self.mapped.mapping[label], -1) for label in reader.labels], dtype=np.int64)
        self.index = dataclasses.replace(reader.index, label=codes[reader.index.label])
        self.rows = np.flatnonzero(self.index.label >= 0)

    @property
    def content_hash(self) -> str:
        return self.reader.content_hash

    def __len__(self) -> int:
        return len(self.index)

    def audio(self, row: int) -> np.ndarray:
        return self.reader.audio(row)
