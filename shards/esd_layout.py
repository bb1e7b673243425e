"""Where things are in an ESD download, whichever copy it is.

Files are found by name, at any depth, so every copy in circulation reads the same:
    [ESD/][Emotion Speech Dataset/]SSSS/<Emotion>/[train|evaluation|test/]SSSS_NNNNNN.wav
    [...]SSSS/SSSS.txt                  transcripts
    [...]ReadMe.txt (or any other text) "0001: Chinese Female" lines, when the copy has them
The emotion comes from the nearest folder named after one; the official split from a split
folder below it, or else from the utterance number (ESD_SPLIT_OFFSETS).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from shards.schema import EMOTIONS

# ESD numbers each speaker's utterances in blocks of 350 per emotion, in this order.
UTTERANCES_PER_EMOTION = 350
ID_BLOCK_ORDER: tuple[str, ...] = ("Neutral", "Angry", "Happy", "Sad", "Surprise")
# Within a block (offsets 1..350): 1-20 evaluation, 21-50 test, 51-350 train.
LAST_EVALUATION_OFFSET, LAST_TEST_OFFSET = 20, 50

CLIP_NAME = re.compile(r"^(\d{4})_(\d{6})\.(wav|flac|ogg|aiff?|mp3)$", re.IGNORECASE)
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".aif", ".aiff", ".mp3"}
TRANSCRIPT_NAME = re.compile(r"^(\d{4})\.txt$", re.IGNORECASE)
INFO_SUFFIXES = {".txt", ".md"}
MAX_INFO_BYTES = 1 << 20
SPLIT_FOLDERS = {"train": "train", "evaluation": "evaluation", "eval": "evaluation", "test": "test"}
EMOTION_FOLDERS = {e.lower(): e for e in EMOTIONS} | {
    "surprised": "Surprise",
    "中立": "Neutral",
    "生气": "Angry",
    "快乐": "Happy",
    "伤心": "Sad",
    "惊喜": "Surprise",
}
MACOS_METADATA_DIR = "__MACOSX"


@dataclass(frozen=True)
class SourceFile:
    """One candidate clip found in the tree."""

    path: Path  # absolute
    rel: str  # relative to the root, '/'-separated: what the manifest records
    speaker: str
    number: int  # the NNNNNN of SSSS_NNNNNN
    folder_emotion: str | None
    folder_split: str | None
    size: int
    mtime_ns: int

    @property
    def utterance_id(self) -> str:
        return f"{self.speaker}_{self.number:06d}"


@dataclass
class TreeScan:
    """Everything found under a root, before any audio is read."""

    root: Path
    sources: dict[str, list[SourceFile]] = field(default_factory=dict)  # speaker -> files by (number, rel)
    transcripts: dict[str, list[Path]] = field(default_factory=dict)  # speaker -> SSSS.txt files
    info_files: list[Path] = field(default_factory=list)  # other small text files (speaker info)
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"}: not clips, found by name
    num_ignored: int = 0  # files that are neither clips, transcripts nor text


def id_block_emotion(number: int) -> str:
    """The emotion ESD's numbering assigns to an utterance number."""
    return ID_BLOCK_ORDER[((number - 1) // UTTERANCES_PER_EMOTION) % len(ID_BLOCK_ORDER)]


def id_split(number: int) -> str:
    """ESD's official split by utterance number (used when a copy has no split folders)."""
    offset = (number - 1) % UTTERANCES_PER_EMOTION + 1
    if offset <= LAST_EVALUATION_OFFSET:
        return "evaluation"
    return "test" if offset <= LAST_TEST_OFFSET else "train"


def esd_language(speaker: str) -> str | None:
    """ESD's numbering: 0001-0010 Mandarin, 0011-0020 English; None for other ids."""
    number = int(speaker)
    if 1 <= number <= 10:
        return "zh"
    return "en" if 11 <= number <= 20 else None


def folder_labels(folders: tuple[str, ...]) -> tuple[str | None, str | None]:
    """(emotion, split) from the folders above a clip: the nearest emotion folder, a split folder below it."""
    emotion_at = None
    for i in range(len(folders) - 1, -1, -1):
        if folders[i].lower() in EMOTION_FOLDERS:
            emotion_at = i
            break
    # A split folder only counts below the emotion folder (or as the direct parent): a root that
    # happens to live under a folder named "test" must not make every clip a test clip.
    below = folders[emotion_at + 1 :] if emotion_at is not None else folders[-1:]
    split = next((SPLIT_FOLDERS[f.lower()] for f in reversed(below) if f.lower() in SPLIT_FOLDERS), None)
    emotion = EMOTION_FOLDERS[folders[emotion_at].lower()] if emotion_at is not None else None
    return emotion, split


def scan_tree(root: str | Path) -> TreeScan:
    """Walk the tree once (symlinked folders too, each real folder once); classify every file by its name."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; pass the folder you extracted ESD into")
    scan = TreeScan(root)
    visited: set[str] = set()

    def unreadable(error: OSError) -> None:  # os.walk would otherwise skip such a folder silently
        scan.skipped.append(
            {"path": relative(root, Path(error.filename)), "reason": f"unreadable folder: {error.strerror}"}
        )

    for folder, subfolders, files in os.walk(root, onerror=unreadable, followlinks=True):
        real = os.path.realpath(folder)
        if real in visited:  # a symlink loop, or the same folder linked twice
            subfolders.clear()
            continue
        visited.add(real)
        subfolders.sort()
        if MACOS_METADATA_DIR in subfolders:
            subfolders.remove(MACOS_METADATA_DIR)
            scan.skipped.append(
                {
                    "path": relative(root, Path(folder, MACOS_METADATA_DIR)),
                    "reason": "macOS archive metadata folder, not audio",
                }
            )
        for name in sorted(files):
            try:
                _classify(scan, Path(folder, name))
            except OSError as error:  # a dangling link, a file gone mid-scan, no permission
                scan.skipped.append(
                    {"path": relative(root, Path(folder, name)), "reason": f"unreadable: {error.strerror or error}"}
                )
    for files in scan.sources.values():
        files.sort(key=lambda f: (f.number, f.rel))
    return scan


def relative(root: Path, path: Path) -> str:
    """'/'-separated path below the root, as the manifest records it (undecodable bytes in names shown as U+FFFD)."""
    rel = path.relative_to(root).as_posix()
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _classify(scan: TreeScan, path: Path) -> None:
    rel = relative(scan.root, path)
    suffix = path.suffix.lower()
    clip = CLIP_NAME.match(path.name)
    if clip:
        stat = path.stat()
        emotion, split = folder_labels(path.relative_to(scan.root).parent.parts)
        source = SourceFile(path, rel, clip[1], int(clip[2]), emotion, split, stat.st_size, stat.st_mtime_ns)
        scan.sources.setdefault(source.speaker, []).append(source)
    elif suffix in AUDIO_SUFFIXES:
        reason = (
            "macOS metadata file ('._' prefix), not audio"
            if path.name.startswith("._")
            else "file name is not SSSS_NNNNNN (speaker_utterance), so speaker and utterance are unknown"
        )
        scan.skipped.append({"path": rel, "reason": reason})
    elif TRANSCRIPT_NAME.match(path.name):
        scan.transcripts.setdefault(path.name[:4], []).append(path)
    elif suffix in INFO_SUFFIXES and not path.name.startswith(".") and path.stat().st_size <= MAX_INFO_BYTES:
        scan.info_files.append(path)
    else:
        scan.num_ignored += 1
