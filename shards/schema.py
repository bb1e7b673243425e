"""The one schema every corpus (demo or real ESD) is written in."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

# ESD's five emotions; the class index of an emotion is its position here.
EMOTIONS: tuple[str, ...] = ("Angry", "Happy", "Neutral", "Sad", "Surprise")
LANGUAGES: tuple[str, ...] = ("en", "zh")
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

    def __post_init__(self) -> None:
        if self.emotion not in EMOTIONS:
            raise ValueError(f"{self.utterance_id}: unknown emotion {self.emotion!r}; expected one of {EMOTIONS}")
        if self.language not in LANGUAGES:
            raise ValueError(f"{self.utterance_id}: unknown language {self.language!r}; expected one of {LANGUAGES}")
        if self.audio.dtype != np.int16 or self.audio.ndim != 1:
            raise ValueError(f"{self.utterance_id}: audio must be 1-D int16, got {self.audio.dtype} {self.audio.shape}")

    @property
    def seconds(self) -> float:
        return len(self.audio) / self.sample_rate
