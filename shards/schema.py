"""The one schema every corpus (demo, ESD, any other) is written in.

A corpus declares its own ordered label set in its manifest (`labels`); a clip's class index is
the position of its `emotion` column in that list. Shards store the label name, so the Arrow
schema is the same for every corpus and ESD's shards are byte-identical to earlier ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

# ESD's five emotions (its label set); the class index of an emotion is its position here.
EMOTIONS: tuple[str, ...] = ("Angry", "Happy", "Neutral", "Sad", "Surprise")
# ESD's two languages. Other corpora may use any ISO 639-1 or 639-3 code ("de", "und", ...).
LANGUAGES: tuple[str, ...] = ("en", "zh")
ISO_639 = re.compile(r"^[a-z]{2,3}$")
SAMPLE_RATE = 16_000
# ESD's official split names (per utterance, not speaker-held-out).
OFFICIAL_SPLITS: tuple[str, ...] = ("train", "evaluation", "test")

CLIP_SCHEMA = pa.schema(
    [
        pa.field("utterance_id", pa.string(), nullable=False),
        pa.field("speaker", pa.string(), nullable=False),
        pa.field("language", pa.string(), nullable=False),
        pa.field("emotion", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("transcript", pa.string(), nullable=False),
        pa.field("sample_rate", pa.int32(), nullable=False),
        pa.field("num_samples", pa.int32(), nullable=False),
        # int16 little-endian mono PCM, stored as raw bytes: a binary column reads
        # zero-copy from a memory map, a list<int16> column would not.
        pa.field("audio", pa.binary(), nullable=False),
    ],
    metadata={"audio_encoding": "pcm_s16le"},
)

# Columns a trial needs to select clips; everything but the audio.
INDEX_COLUMNS: tuple[str, ...] = tuple(n for n in CLIP_SCHEMA.names if n != "audio")

# Dimensional (attribute) labels, in this order wherever a corpus has them (MSP-Podcast's EmoAct,
# EmoVal, EmoDom; IEMOCAP's [v, a, d]). A corpus with some of them gets one float32 column each,
# after the audio; a corpus without any keeps CLIP_SCHEMA, so its shards stay byte-identical.
DIMENSIONS: tuple[str, ...] = ("arousal", "valence", "dominance")


def clip_schema(dimensions: tuple[str, ...] = ()) -> pa.Schema:
    """CLIP_SCHEMA, plus a nullable float32 column per dimension the corpus has (a missing value is null)."""
    unknown = [d for d in dimensions if d not in DIMENSIONS]
    if unknown:
        raise ValueError(f"unknown dimension(s) {unknown}; known: {DIMENSIONS}")
    if not dimensions:
        return CLIP_SCHEMA
    return pa.schema(
        [*CLIP_SCHEMA, *(pa.field(d, pa.float32(), nullable=True) for d in dimensions)], metadata=CLIP_SCHEMA.metadata
    )


def ordered_dimensions(names) -> tuple[str, ...]:
    """The dimensions among `names`, in DIMENSIONS order."""
    return tuple(d for d in DIMENSIONS if d in set(names))


@dataclass(frozen=True)
class Clip:
    """One utterance, ready to be written to a shard."""

    utterance_id: str
    speaker: str
    language: str
    emotion: str
    split: str
    transcript: str
    audio: np.ndarray  # int16, mono, at SAMPLE_RATE
    sample_rate: int = SAMPLE_RATE
    # One value per dimension of the corpus (its manifest's order; NaN: this clip has none); () without.
    dimensions: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        # The writer checks the label against its corpus's label set; a clip only knows it has one.
        if not self.emotion:
            raise ValueError(f"{self.utterance_id}: empty label")
        if not ISO_639.match(self.language):
            raise ValueError(
                f"{self.utterance_id}: language {self.language!r} is not an ISO 639 code (e.g. 'en', 'deu')"
            )
        if self.audio.dtype != np.int16 or self.audio.ndim != 1:
            raise ValueError(f"{self.utterance_id}: audio must be 1-D int16, got {self.audio.dtype} {self.audio.shape}")

    @property
    def seconds(self) -> float:
        return len(self.audio) / self.sample_rate


def language_code(text: str) -> str | None:
    """'en', 'EN', 'en-US', 'en_GB' -> 'en'; 'deu' -> 'deu'; None when it is no ISO 639 code."""
    primary = re.split(r"[-_]", text.strip().lower(), maxsplit=1)[0]
    return primary if ISO_639.match(primary) else None
