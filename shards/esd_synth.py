"""Write an ESD-shaped folder of short synthetic clips (for ingest tests and the ingest benchmark).

The tree follows the release: `SSSS/<Emotion>/[<split>/]SSSS_NNNNNN.wav` plus `SSSS/SSSS.txt`,
utterance numbers in ESD's emotion blocks, and transcripts in the speaker's language.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from shards.esd_layout import ID_BLOCK_ORDER, UTTERANCES_PER_EMOTION, esd_language, id_split
from shards.transcripts import CHINESE_EMOTIONS

EMOTION_IN_CHINESE = {english: chinese for chinese, english in CHINESE_EMOTIONS.items()}
# Offsets inside an emotion block that cover every official split and its edges first.
FIRST_OFFSETS = (1, 21, 51, 20, 50, 350)


@dataclass(frozen=True)
class SynthClip:
    utterance_id: str
    speaker: str
    emotion: str
    split: str
    transcript: str
    path: Path
    audio: np.ndarray  # int16 mono at 16 kHz, as written


def block_offsets(count: int) -> list[int]:
    """`count` distinct offsets within a block of 350, edge cases first."""
    extra = [o for o in range(2, UTTERANCES_PER_EMOTION + 1) if o not in FIRST_OFFSETS]
    return (list(FIRST_OFFSETS) + extra)[:count]


def synth_audio(seconds: float, seed: int, rate: int = 16_000) -> np.ndarray:
    """A short voiced-sounding signal: a harmonic tone with a random pitch, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = rng.uniform(90, 250)
    wave = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.28)) / k for k in range(1, 5))
    wave = 0.25 * wave / 2.1 + rng.normal(0, 0.01, len(t))
    return (np.clip(wave, -1, 1) * 32767).astype(np.int16)


def transcript_text(speaker: str, number: int) -> str:
    if esd_language(speaker) == "zh":
        return f"打远一看，第{number}句话很是美丽。"
    return f"Author of the danger trail, line {number}."


def write_esd_tree(
    root: str | Path,
    speakers: list[str],
    clips_per_emotion: int,
    split_folders: bool,
    seconds: float = 0.12,
    top: str = "Emotion Speech Dataset",
    encodings: dict[str, str] | None = None,
) -> list[SynthClip]:
    """Write the tree; return every clip as written. `encodings`: transcript codec per speaker (default utf-8)."""
    base = Path(root) / top if top else Path(root)
    clips = []
    for speaker in speakers:
        lines = []
        for block, emotion in enumerate(ID_BLOCK_ORDER):
            for offset in block_offsets(clips_per_emotion):
                number = block * UTTERANCES_PER_EMOTION + offset
                utterance_id = f"{speaker}_{number:06d}"
                split = id_split(number)
                folder = base / speaker / emotion / (split if split_folders else "")
                folder.mkdir(parents=True, exist_ok=True)
                audio = synth_audio(seconds, seed=int(speaker) * 10_000 + number)
                path = folder / f"{utterance_id}.wav"
                soundfile.write(path, audio, 16_000, subtype="PCM_16")
                text = transcript_text(speaker, number)
                label = EMOTION_IN_CHINESE[emotion] if esd_language(speaker) == "zh" else emotion
                lines.append(f"{utterance_id}\t{text}\t{label}")
                clips.append(SynthClip(utterance_id, speaker, emotion, split, text, path, audio))
        codec = (encodings or {}).get(speaker, "utf-8")
        (base / speaker / f"{speaker}.txt").write_bytes(("\n".join(lines) + "\n").encode(codec))
    return clips
