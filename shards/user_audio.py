"""Reading a user's audio file (for predict) into what the model hears: mono float32 at 16 kHz.

Any format libsndfile decodes (WAV, FLAC, OGG/Vorbis, MP3, AIFF, ...), any sample rate, any number
of channels: channels are averaged, then soxr resamples. Every way a file can be unusable raises
`AudioFileError` with a message meant for the person who chose the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shards.schema import SAMPLE_RATE
from shards.source_decode import mono_at

# Below -60 dBFS peak nothing is audible; the model would answer on the noise floor.
SILENCE_PEAK = 10 ** (-60 / 20)
MIN_SECONDS = 0.1  # a few wav2vec2 frames (20 ms each); anything shorter is not an utterance


class AudioFileError(ValueError):
    """A file that cannot be analysed; the message says why."""


@dataclass(frozen=True)
class AudioInput:
    path: Path
    audio: np.ndarray  # float32 mono at SAMPLE_RATE, in [-1, 1]
    source_rate: int
    source_channels: int
    source_format: str

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def read_audio(path: str | Path, max_seconds: float | None = None, sample_rate: int = SAMPLE_RATE) -> AudioInput:
    """Decode, mix down to mono and resample one file; refuse what the model cannot answer for.

    The length is checked from the header before decoding, so a long recording costs nothing.
    """
    import soundfile as sf

    path = Path(path)
    if not path.exists():
        raise AudioFileError("no such file")
    if path.is_dir():
        raise AudioFileError("is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioFileError("is empty (0 bytes)")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as error:
        raise AudioFileError(
            f"not a readable audio file ({_short(error)}); use WAV, FLAC, OGG, MP3 or another format libsndfile reads"
        ) from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioFileError("holds no audio samples")
    header_seconds = info.frames / info.samplerate
    if max_seconds is not None and header_seconds > max_seconds:
        raise AudioFileError(
            f"is {header_seconds:.1f} s long, over the {max_seconds:g} s limit: the model was trained on "
            "single utterances (ESD clips are 1-5 s); cut it into utterances or raise --max-seconds"
        )
    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as error:
        raise AudioFileError(f"could not be decoded ({_short(error)})") from None
    audio = mono_at(samples, rate, sample_rate).astype(np.float32)
    if len(audio) < MIN_SECONDS * sample_rate:
        raise AudioFileError(
            f"is {len(audio) / sample_rate:.3f} s long; at least {MIN_SECONDS:g} s of speech is needed"
        )
    if not np.isfinite(audio).all():
        raise AudioFileError("holds invalid samples (NaN or infinity)")
    peak = float(np.abs(audio).max())
    if peak < SILENCE_PEAK:
        raise AudioFileError(f"is silent (peak {_dbfs(peak)}); there is no speech to analyse")
    return AudioInput(path, audio, int(rate), int(samples.shape[1]), f"{info.format}/{info.subtype}")


def _dbfs(peak: float) -> str:
    return "-inf dBFS" if peak <= 0 else f"{20 * np.log10(peak):.0f} dBFS"


def _short(error: Exception) -> str:
    """libsndfile's own words ('Format not recognised.'), without the path the caller already shows."""
    text = getattr(error, "error_string", None) or str(error).strip() or type(error).__name__
    return text.splitlines()[-1].strip().rstrip(".")[:200]
