"""The speaker split every trial kind trains and evaluates on.

The training speakers' clips minus a `val_fraction` held out by utterance-id hash (the `val` set,
which ranks trials), then each held-out set of the plan by its speakers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shards.batching import holdout
from shards.reader import ShardReader


@dataclass(frozen=True)
class SpeakerSplit:
    train_rows: np.ndarray
    eval_rows: dict[str, np.ndarray]  # 'val' (held-out clips of training speakers) + the plan's sets


def split_rows(
    reader: ShardReader,
    train_speakers: tuple[str, ...],
    eval_sets: dict[str, tuple[str, ...]],
    val_fraction: float,
    seed: int,
) -> SpeakerSplit:
    """Rows of the training clips, the validation clips and each held-out set; every speaker must be in the corpus."""
    known = set(reader.index.speaker)
    for speaker in (*train_speakers, *(s for group in eval_sets.values() for s in group)):
        if speaker not in known:
            raise ValueError(f"speaker {speaker} is not in {reader.data_dir}; it has {sorted(known)}")
    train_rows, val_rows = holdout(reader.index, reader.index.select(list(train_speakers)), val_fraction, seed)
    eval_rows = {"val": val_rows} if len(val_rows) else {}
    eval_rows.update({name: reader.index.select(list(speakers)) for name, speakers in eval_sets.items()})
    return SpeakerSplit(train_rows, eval_rows)
