"""Read one source audio file into the schema's form: int16 mono at 16 kHz, or a reason it cannot be.

Runs in decoder processes, so it imports nothing heavy and never raises: a bad file becomes a
`Decoded` with `reason` set. Release files (16-bit mono 16 kHz) are read as int16 and stored
bit-exact; anything else is mixed down to mono and resampled with soxr (high quality).
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass

import numpy as np
import soundfile
import soxr

TARGET_RATE = 16_000
AUDIO_MAGICS = (b"RIFF", b"RIFX", b"RF64", b"fLaC", b"OggS", b"FORM", b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2")


@dataclass(frozen=True)
class Decoded:
    """The result of reading one file: samples, or why there are none."""

    rel: str
    sha256: str
    num_bytes: int
    audio: np.ndarray | None = None  # int16 mono at TARGET_RATE
    source_rate: int = 0
    source_channels: int = 0
    reason: str | None = None  # set when the file was skipped


def decode_source(job: tuple[str, str]) -> Decoded:
    """(absolute path, relative path) -> Decoded. Never raises for a bad file."""
    path, rel = job
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        return Decoded(rel, "", 0, reason=f"unreadable: {error.strerror or error}")
    digest = hashlib.sha256(data).hexdigest()
    reason = problem_before_decoding(data)
    if reason:
        return Decoded(rel, digest, len(data), reason=reason)
    try:
        audio, rate, channels = decode_bytes(data)
    except Exception as error:  # libsndfile and soxr raise several types; all mean "skip this file"
        return Decoded(rel, digest, len(data), reason=describe_failure(data, error))
    if len(audio) == 0:
        return Decoded(rel, digest, len(data), reason="no audio samples (header only)")
    return Decoded(rel, digest, len(data), audio, rate, channels)


def problem_before_decoding(data: bytes) -> str | None:
    """Empty or truncated files, caught before libsndfile quietly reads what is there."""
    if not data:
        return "empty file (0 bytes)"
    if data[:4] in (b"RIFF", b"RIFX"):
        return wav_truncation(data)
    return None


def wav_truncation(data: bytes) -> str | None:
    """A WAV whose data chunk is shorter than its header says (an interrupted copy or download)."""
    byteorder = "big" if data[:4] == b"RIFX" else "little"
    if len(data) < 12:
        return f"truncated: {len(data)} bytes, shorter than a WAV header"
    position = 12
    while position + 8 <= len(data):
        chunk, size = data[position : position + 4], int.from_bytes(data[position + 4 : position + 8], byteorder)
        if chunk == b"data":
            available = len(data) - position - 8
            # 0 and 0xFFFFFFFF mark a size a streaming writer never filled in: not truncation.
            if size not in (0, 0xFFFFFFFF) and available < size:
                return f"truncated: the data chunk declares {size} bytes, the file holds {available}"
            return None
        position += 8 + size + (size & 1)
    return "truncated: the file ends before the audio data chunk"


def decode_bytes(data: bytes) -> tuple[np.ndarray, int, int]:
    """int16 mono at TARGET_RATE, with the source's rate and channel count."""
    with soundfile.SoundFile(io.BytesIO(data)) as f:
        rate, channels, subtype = f.samplerate, f.channels, f.subtype
        if rate == TARGET_RATE and channels == 1 and subtype == "PCM_16":
            return f.read(dtype="int16"), rate, channels
        samples = f.read(dtype="float32", always_2d=True)
    return to_int16(mono_at(samples, rate)), rate, channels


def mono_at(samples: np.ndarray, rate: int, target_rate: int = TARGET_RATE) -> np.ndarray:
    """[frames, channels] floats -> float64 mono at `target_rate`: channels averaged, then soxr (HQ).

    The one conversion for training audio (ingest) and the audio a trained model is asked about
    (orchestrator.predict), so both see the same signal.
    """
    mono = samples.mean(axis=1, dtype=np.float64) if samples.shape[1] > 1 else samples[:, 0].astype(np.float64)
    if rate != target_rate:
        mono = soxr.resample(mono, rate, target_rate, quality="HQ")
    return mono


def to_int16(samples: np.ndarray) -> np.ndarray:
    """[-1, 1) floats -> int16, the inverse of libsndfile's int16 / 32768."""
    scaled = np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0) * 32768.0
    return np.clip(np.rint(scaled), -32768, 32767).astype(np.int16)


def describe_failure(data: bytes, error: Exception) -> str:
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    message = re.sub(r"^Error opening <[^>]*>:\s*", "", message)  # names our in-memory buffer, not the file
    if data[:4] in AUDIO_MAGICS or data[:3] in AUDIO_MAGICS or data[:2] in AUDIO_MAGICS:
        return f"undecodable audio: {message}"
    kind = "text" if _is_text(data[:512]) else "binary data"
    return f"not an audio file ({kind}, starts with {data[:16]!r})"


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(b >= 0x20 or b in b"\t\r\n" for b in head)
