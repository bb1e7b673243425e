"""A synthetic, ESD-shaped demo corpus: speech-like audio whose emotion lives in the prosody.

Each clip is a few syllables of a glottal pulse train shaped by vowel formants. Emotions change
pitch level and range, speaking rate, loudness, spectral tilt and breathiness; every speaker has
their own voice (pitch, vocal-tract length) and their own way of expressing each emotion, so a
held-out speaker is a real generalisation test. Mandarin-tagged speakers carry lexical tones,
which blur the pitch-range cue, so transfer from English is only partial (as in the paper).
Deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shards.schema import EMOTIONS, SAMPLE_RATE, Clip
from shards.splits import write_plans
from shards.writer import ShardWriter


def lfilter(b, a, x):
    """scipy's, imported on first use: `import scipy.signal` takes ~2 s, and every sweep on the demo
    corpus imports this module to check the corpus exists before it builds anything."""
    from scipy.signal import lfilter as scipy_lfilter

    return scipy_lfilter(b, a, x)


# ESD numbering: 0001-0010 Mandarin, 0011-0020 English.
DEMO_SPEAKERS: dict[str, dict] = {
    "0001": {"language": "zh", "gender": "F"},
    "0002": {"language": "zh", "gender": "M"},
    "0003": {"language": "zh", "gender": "F"},
    "0011": {"language": "en", "gender": "M"},
    "0012": {"language": "en", "gender": "F"},
    "0013": {"language": "en", "gender": "F"},
    "0014": {"language": "en", "gender": "M"},
    "0015": {"language": "en", "gender": "F"},
    "0016": {"language": "en", "gender": "M"},
}
DEMO_VERSION = 1


@dataclass(frozen=True)
class Prosody:
    """How an emotion shifts a speaker's neutral voice."""

    pitch_shift_st: float  # mean pitch, semitones above neutral
    pitch_range: float  # intonation excursion, x neutral
    rate: float  # syllables per second, x neutral
    loudness: float  # x neutral
    tilt: float  # one-pole source filter coefficient: higher is darker
    breathiness: float  # aspiration noise relative to voicing
    final_rise_st: float  # pitch rise over the last syllable


EMOTION_PROSODY: dict[str, Prosody] = {
    "Neutral": Prosody(0.0, 1.0, 1.00, 1.0, 0.93, 0.04, 0.0),
    "Angry": Prosody(3.0, 1.4, 1.20, 1.9, 0.80, 0.02, -1.0),
    "Happy": Prosody(4.5, 2.0, 1.12, 1.4, 0.88, 0.05, 1.0),
    "Sad": Prosody(-2.5, 0.45, 0.72, 0.55, 0.97, 0.25, -1.5),
    "Surprise": Prosody(6.0, 2.4, 0.95, 1.3, 0.86, 0.06, 7.0),
}

# Vowel formants (Hz) of an average adult; scaled per speaker by vocal-tract length.
VOWELS: dict[str, tuple[float, float, float]] = {
    "a": (730, 1090, 2440),
    "i": (270, 2290, 3010),
    "u": (300, 870, 2240),
    "e": (530, 1840, 2480),
    "o": (570, 840, 2410),
}
ONSETS = ("b", "d", "g", "m", "n", "s", "t", "l", "k", "sh")
# Mandarin tones as pitch contours (semitones at start, middle, end of a syllable).
TONES: dict[int, tuple[float, float, float]] = {
    1: (2.0, 2.0, 2.0),
    2: (-1.0, 0.5, 3.0),
    3: (-1.0, -3.5, -0.5),
    4: (3.5, 1.0, -3.0),
}


@dataclass(frozen=True)
class Voice:
    """A speaker: their neutral voice and their personal way of expressing emotion."""

    speaker: str
    language: str
    base_f0: float
    tract_scale: float
    expressiveness: float
    quirks: dict[str, tuple[float, float]]  # emotion -> (extra pitch shift st, rate factor)


def make_voice(speaker: str, meta: dict, seed: int) -> Voice:
    rng = np.random.default_rng([seed, int(speaker)])
    base_f0 = rng.uniform(95, 135) if meta["gender"] == "M" else rng.uniform(180, 240)
    tract_scale = rng.uniform(0.88, 1.0) if meta["gender"] == "M" else rng.uniform(1.0, 1.15)
    quirks = {e: (rng.normal(0, 1.0), rng.uniform(0.92, 1.08)) for e in EMOTIONS}
    return Voice(speaker, meta["language"], base_f0, tract_scale, rng.uniform(0.7, 1.2), quirks)


def synthesize(voice: Voice, emotion: str, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """One utterance: float waveform in [-1, 1] and its transcript."""
    prosody = EMOTION_PROSODY[emotion]
    quirk_st, quirk_rate = voice.quirks[emotion]
    shift_st = prosody.pitch_shift_st * voice.expressiveness + quirk_st
    pitch_range = 1.0 + (prosody.pitch_range - 1.0) * voice.expressiveness
    syllable_seconds = 0.2 / (prosody.rate * quirk_rate)
    num_syllables = int(rng.integers(4, 8))
    pieces = [np.zeros(int(rng.uniform(0.05, 0.15) * SAMPLE_RATE))]
    words = []
    for k in range(num_syllables):
        vowel = str(rng.choice(list(VOWELS)))
        onset = str(rng.choice(ONSETS))
        # Declining intonation with a random accent; Surprise rises at the end.
        position = k / max(num_syllables - 1, 1)
        accent_st = rng.uniform(-1.0, 2.5) * pitch_range
        start_st = shift_st + (1.0 - 2.0 * position) * 1.5 * pitch_range + accent_st
        contour = np.array([start_st, start_st - 0.3 * pitch_range, start_st - 0.6 * pitch_range])
        if k == num_syllables - 1:
            contour += np.array([0.0, 0.4, 1.0]) * prosody.final_rise_st * voice.expressiveness
        word = onset + vowel
        if voice.language == "zh":
            tone = int(rng.integers(1, 5))
            contour += np.array(TONES[tone]) * 1.3
            word += str(tone)
        words.append(word)
        seconds = syllable_seconds * rng.uniform(0.8, 1.25)
        pieces.append(_syllable(voice, prosody, vowel, onset, contour, seconds, rng))
        pieces.append(np.zeros(int(rng.uniform(0.02, 0.08) / prosody.rate * SAMPLE_RATE)))
    pieces.append(np.zeros(int(rng.uniform(0.05, 0.15) * SAMPLE_RATE)))
    wave = np.concatenate(pieces)
    wave += rng.normal(0, 3e-4, len(wave))  # recording noise floor
    return wave, " ".join(words)


def _syllable(
    voice: Voice,
    prosody: Prosody,
    vowel: str,
    onset: str,
    contour_st: np.ndarray,
    seconds: float,
    rng: np.random.Generator,
) -> np.ndarray:
    n = int(seconds * SAMPLE_RATE)
    t = np.linspace(0.0, 1.0, n)
    pitch_st = np.interp(t, [0.0, 0.5, 1.0], contour_st)
    f0 = voice.base_f0 * 2.0 ** (pitch_st / 12.0) * (1 + rng.normal(0, 0.004, n))  # jitter
    phase = np.cumsum(f0 / SAMPLE_RATE)
    pulses = np.diff(np.floor(phase), prepend=0.0)  # one impulse per glottal cycle
    source = lfilter([1.0], [1.0, -prosody.tilt], pulses)  # spectral tilt of the glottal flow
    source = source / (np.abs(source).max() + 1e-9)
    source += prosody.breathiness * rng.normal(0, 1, n)
    voiced = source
    for formant, bandwidth in zip(VOWELS[vowel], (80.0, 110.0, 160.0)):
        voiced = _resonate(voiced, formant * voice.tract_scale, bandwidth)
    envelope = np.sin(np.pi * np.clip(t * 1.15, 0, 1)) ** 0.6
    voiced = voiced / (np.abs(voiced).max() + 1e-9) * envelope * prosody.loudness
    burst_n = int(0.04 * SAMPLE_RATE) if onset in ("s", "sh", "t", "k") else int(0.015 * SAMPLE_RATE)
    burst = lfilter([1.0, -0.95], [1.0], rng.normal(0, 0.08 * prosody.loudness, burst_n))
    return np.concatenate([burst, voiced])


def _resonate(signal: np.ndarray, frequency: float, bandwidth: float) -> np.ndarray:
    """Second-order resonator (a formant)."""
    r = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
    theta = 2 * np.pi * frequency / SAMPLE_RATE
    return lfilter([1.0 - r], [1.0, -2 * r * np.cos(theta), r * r], signal)


def official_split(index: int) -> str:
    """ESD's per-emotion split scaled to the demo: first 6% evaluation, next 9% test, rest train."""
    offset = index % 100
    return "evaluation" if offset < 6 else "test" if offset < 15 else "train"


def demo_clips(seed: int = 0, clips_per_emotion: int = 24):
    """Every clip of the demo corpus, speaker by speaker, in ESD's id numbering."""
    for speaker, meta in DEMO_SPEAKERS.items():
        voice = make_voice(speaker, meta, seed)
        for e, emotion in enumerate(EMOTIONS):
            for k in range(clips_per_emotion):
                rng = np.random.default_rng([seed, int(speaker), e, k])
                wave, transcript = synthesize(voice, emotion, rng)
                # Loudness differences survive: scale once for the whole corpus, not per clip.
                audio = np.clip(wave * 0.35, -1.0, 1.0)
                yield Clip(
                    utterance_id=f"{speaker}_{e * 350 + k + 1:06d}",
                    speaker=speaker,
                    language=meta["language"],
                    emotion=emotion,
                    split=official_split(k),
                    transcript=transcript,
                    audio=(audio * 32767).astype(np.int16),
                )


def build_demo_corpus(out_dir: str | Path, seed: int = 0, clips_per_emotion: int = 24) -> dict:
    """Write the demo corpus through the same shard writer that ingest uses; return the manifest."""
    extra = {"source": {"kind": "demo", "version": DEMO_VERSION, "seed": seed, "clips_per_emotion": clips_per_emotion}}
    with ShardWriter(Path(out_dir), speakers=DEMO_SPEAKERS, extra_manifest=extra) as writer:
        for clip in demo_clips(seed, clips_per_emotion):
            writer.add(clip)
    write_plans(out_dir, DEMO_SPEAKERS)
    return writer.close()
