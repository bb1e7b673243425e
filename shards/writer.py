"""Writes clips into Arrow IPC shards plus a manifest, atomically.

Layout of a data directory:
    manifest.json              counts, seconds, speakers, and the sha256 of every shard
    shards/<lang>-<speaker>[-<tag>]-<n>.arrow
    splits.json                speaker-disjoint split plans (shards.splits)
A shard appears under its final name only once complete (write to a temp file, then rename),
so a reader never sees half a shard. A shard holds at most `max_shard_bytes` of audio (a single
longer clip gets a shard of its own).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from shards.schema import EMOTIONS, Clip, clip_schema

MANIFEST_NAME = "manifest.json"
SHARD_DIR = "shards"
DEFAULT_MAX_SHARD_BYTES = 256 * 1024 * 1024


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomically(path: Path, data: bytes | pa.Buffer) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; shards are read by trial processes of any user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_shard(path: Path, clips: list[Clip], dimensions: tuple[str, ...] = ()) -> dict:
    """Write one shard atomically; return its manifest entry. `dimensions`: the corpus's (a column each)."""
    schema = clip_schema(dimensions)
    for clip in clips:
        if len(clip.dimensions) != len(dimensions):
            raise ValueError(f"{clip.utterance_id}: {len(clip.dimensions)} dimension values for {dimensions}")
    values = {
        d: [None if np.isnan(c.dimensions[i]) else float(c.dimensions[i]) for c in clips]
        for i, d in enumerate(dimensions)
    }
    table = pa.Table.from_pydict(
        {
            "utterance_id": [c.utterance_id for c in clips],
            "speaker": [c.speaker for c in clips],
            "language": [c.language for c in clips],
            "emotion": [c.emotion for c in clips],
            "split": [c.split for c in clips],
            "transcript": [c.transcript for c in clips],
            "sample_rate": [c.sample_rate for c in clips],
            "num_samples": [len(c.audio) for c in clips],
            "audio": [c.audio.astype("<i2", copy=False).tobytes() for c in clips],
            **values,
        },
        schema=schema,
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, schema) as writer:
        writer.write_table(table, max_chunksize=1024)
    data = sink.getvalue()  # an Arrow buffer: written and hashed without a copy into Python bytes
    write_atomically(path, data)
    return {
        "path": f"{SHARD_DIR}/{path.name}",
        "num_rows": len(clips),
        "num_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "seconds": round(sum(c.seconds for c in clips), 3),
        "utterance_ids": [c.utterance_id for c in clips],  # in row order
    }


@dataclass
class ShardWriter:
    """Buffers clips per (language, speaker) and flushes bounded shards; `close()` writes the manifest.

    `speaker_tags` put a tag into a speaker's shard names: a re-ingest writes new names, so the
    shards the current manifest points at stay intact until the new manifest replaces it.
    `adopt()` takes shards written by an earlier run into this manifest unchanged.
    """

    out_dir: Path
    speakers: dict[str, dict]  # speaker id -> {"language": ..., "gender": ...}
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
    extra_manifest: dict = field(default_factory=dict)
    speaker_tags: dict[str, str] = field(default_factory=dict)
    labels: tuple[str, ...] = EMOTIONS  # the corpus's ordered label set (ESD's by default)
    # The corpus's dimensions (shards.schema.DIMENSIONS order): a shard column each; () for most corpora.
    dimensions: tuple[str, ...] = ()
    _buffers: dict[tuple[str, str], list[Clip]] = field(default_factory=lambda: defaultdict(list))
    _buffer_bytes: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    _shard_counts: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    _entries: list[dict] = field(default_factory=list)
    _counts: dict[str, dict[str, int]] = field(default_factory=dict)
    _manifest: dict | None = None

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.labels = tuple(self.labels)
        if len(set(self.labels)) != len(self.labels) or not all(self.labels):
            raise ValueError(f"a label set names each label once, none empty: {self.labels}")
        (self.out_dir / SHARD_DIR).mkdir(parents=True, exist_ok=True)

    def add(self, clip: Clip) -> None:
        if clip.speaker not in self.speakers:
            raise ValueError(f"{clip.utterance_id}: speaker {clip.speaker} has no metadata")
        if clip.emotion not in self.labels:
            raise ValueError(f"{clip.utterance_id}: label {clip.emotion!r} is not in the corpus's labels {self.labels}")
        key = (clip.language, clip.speaker)
        if self._buffers[key] and self._buffer_bytes[key] + clip.audio.nbytes > self.max_shard_bytes:
            self._flush(key)
        self._buffers[key].append(clip)
        self._buffer_bytes[key] += clip.audio.nbytes
        per_speaker = self._counts.setdefault(clip.speaker, dict.fromkeys(self.labels, 0))
        per_speaker[clip.emotion] += 1

    def adopt(self, entries: list[dict], counts: dict[str, dict[str, int]]) -> None:
        """Take already-written shards (manifest entries) and their per speaker x emotion counts."""
        self._entries.extend(entries)
        for speaker, per_emotion in counts.items():
            merged = self._counts.setdefault(speaker, dict.fromkeys(self.labels, 0))
            for emotion, count in per_emotion.items():
                merged[emotion] += count

    def flush_speaker(self, speaker: str) -> list[dict]:
        """Write out a speaker's buffered clips; return the entries of all that speaker's shards."""
        self._flush((self.speakers[speaker]["language"], speaker))
        return [e for e in self._entries if e.get("speaker") == speaker]

    def _flush(self, key: tuple[str, str]) -> None:
        clips = self._buffers.pop(key, [])
        self._buffer_bytes.pop(key, None)
        if not clips:
            return
        language, speaker = key
        index = self._shard_counts[key]
        self._shard_counts[key] += 1
        tag = self.speaker_tags.get(speaker)
        name = safe_name(speaker)
        stem = f"{language}-{name}-{tag}" if tag else f"{language}-{name}"
        entry = write_shard(self.out_dir / SHARD_DIR / f"{stem}-{index:04d}.arrow", clips, self.dimensions)
        self._entries.append({"speaker": speaker, **entry})

    def close(self) -> dict:
        if self._manifest is not None:
            return self._manifest
        for key in list(self._buffers):
            self._flush(key)
        manifest = build_manifest(
            self._entries, self.speakers, self._counts, self.extra_manifest, self.labels, self.dimensions
        )
        write_atomically(self.out_dir / MANIFEST_NAME, json.dumps(manifest, indent=1, ensure_ascii=False).encode())
        self._manifest = manifest
        return manifest

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()


def safe_name(speaker: str) -> str:
    """A speaker id as it may appear in a file name (ESD's ids are unchanged)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", speaker)


def build_manifest(
    entries: list[dict],
    speakers: dict,
    counts: dict,
    extra: dict,
    labels: tuple[str, ...] = EMOTIONS,
    dimensions: tuple[str, ...] = (),
) -> dict:
    entries = sorted(entries, key=lambda e: e["path"])
    # One hash for the whole corpus: trials tag their MLflow runs with it.
    content_hash = hashlib.sha256("".join(e["sha256"] for e in entries).encode()).hexdigest()
    return {
        "format": "emotion-sweep-shards/1",
        "schema": [f.name for f in clip_schema(dimensions)],
        "content_hash": content_hash,
        "labels": list(labels),
        "num_clips": sum(e["num_rows"] for e in entries),
        "total_seconds": round(sum(e["seconds"] for e in entries), 3),
        "speakers": {s: speakers[s] for s in sorted(speakers)},
        "counts": {s: counts[s] for s in sorted(counts)},
        "shards": entries,
        **extra,
    }


def read_manifest(data_dir: Path) -> dict:
    path = Path(data_dir) / MANIFEST_NAME
    if not path.exists():
        raise FileNotFoundError(
            f"{data_dir} holds no {MANIFEST_NAME}: not a shard directory. Create one with "
            "`python -m orchestrator.ingest esd PATH --out DIR`, or omit --data to use the demo corpus."
        )
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ManifestError(f"{path} is not valid JSON ({error}): truncated or edited? {REBUILD_HINT}") from None
    missing = [key for key in MANIFEST_KEYS if key not in manifest] if isinstance(manifest, dict) else MANIFEST_KEYS
    if missing:
        raise ManifestError(f"{path} lacks {', '.join(missing)}: not a manifest this project wrote. {REBUILD_HINT}")
    return manifest


class ManifestError(ValueError):
    """A manifest.json that cannot be read as one (one line naming the file)."""


MANIFEST_KEYS = ("content_hash", "speakers", "counts", "shards")
REBUILD_HINT = "Rebuild the directory with `python -m orchestrator.ingest esd PATH --out DIR`."


def manifest_dimensions(manifest: dict) -> dict[str, list[float]]:
    """A corpus's dimensional labels: name -> [low, high] of its scale, in shards.schema.DIMENSIONS order
    ({} for a corpus without them, and for every manifest written before dimensions existed)."""
    return dict(manifest.get("dimensions") or {})


def manifest_labels(manifest: dict) -> tuple[str, ...]:
    """A corpus's ordered label set; manifests written before label sets existed are ESD's."""
    return tuple(manifest.get("labels", EMOTIONS))
