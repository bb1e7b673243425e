"""The frozen front end's cache: each clip's conv feature-encoder output, computed once per node, memory-mapped.

In every stage that trains the transformer but not the conv front end (`all_but_cnn`, `transformer`, `lora`)
of a wav2vec2-family encoder, the front end's output for a clip never changes; trials of a sweep (and later
sweeps on the same corpus and start) read it from here instead of recomputing it every epoch. An entry is
one front end on one corpus, keyed by a hash of the front end's weights (every byte) and config (model type,
conv layers, norm, activation), the precision it ran at (cpu-fp32, cuda-bf16) and the corpus's content hash;
inside it a clip is its row in the corpus:

    <feature_cache_dir>/frontend/<key>/
        segment-<id>.arrow   Arrow IPC file: row (int64), num_frames (int32), features (binary: fp16 [frames, channels])
        segment-<id>.json    its commit record: rows, bytes, sha256 (written last: an .arrow without one is partial)
        .lock

A trial needing rows that no segment holds computes just those (under the entry's file lock, so concurrent
trials compute a clip once) and adds them as a new segment: written to a temporary name, renamed, then
committed by its .json. Segments are checked against their .json once per node and file version (size and
sha256: shards.integrity) before they are read; a damaged, truncated or uncommitted one is deleted and its
clips computed again. Size: 2 bytes x channels x 50 frames/s (XLSR-53: 512 channels, 51 kB per second of
audio; all of ESD, ~29 h, is ~5.3 GB).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from shards.integrity import ShardIntegrityError, verify_shard_once
from shards.writer import file_sha256, write_atomically
from workers.core.file_lock import locked

FORMAT = "emotion-sweep-frontend/1"
FRONTEND_DIR = "frontend"
SEGMENT_SCHEMA = pa.schema(
    [
        pa.field("row", pa.int64(), nullable=False),
        pa.field("num_frames", pa.int32(), nullable=False),
        pa.field("features", pa.binary(), nullable=False),  # float16 little-endian, [num_frames, channels] row-major
    ],
    metadata={"format": FORMAT},
)
CLIPS_PER_BATCH = 64  # Arrow record batch size: a binary column's offsets are int32
# What the front end's output depends on besides its weights (wav2vec2-family config names).
FRONTEND_CONFIG_FIELDS = (
    "model_type",
    "conv_dim",
    "conv_stride",
    "conv_kernel",
    "conv_bias",
    "feat_extract_norm",
    "feat_extract_activation",
    "num_feat_extract_layers",
)

# What computes missing clips: sorted rows -> (rows, fp16 [frames, channels] per clip), in any grouping.
Compute = Callable[[np.ndarray], Iterable[tuple[np.ndarray, list[np.ndarray]]]]


def frontend_fingerprint(frontend_state: dict, config) -> str:
    """A hash of the front end's weights (every byte: 17 MB for XLSR-53) and the config its output depends on."""
    digest = hashlib.sha256(FORMAT.encode())
    values = {name: getattr(config, name, None) for name in FRONTEND_CONFIG_FIELDS}
    digest.update(json.dumps(values, sort_keys=True, default=str).encode())
    for name, tensor in sorted(frontend_state.items()):
        array = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(array.shape)}:{array.dtype}".encode())
        digest.update(array.view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def entry_key(fingerprint: str, precision: str, content_hash: str) -> str:
    return hashlib.sha256(json.dumps([FORMAT, fingerprint, precision, content_hash]).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class CacheReport:
    """What opening an entry did: clips read from it, computed now, and damaged segments it threw away."""

    hits: int
    computed: int
    discarded_segments: int = 0

    def describe(self) -> str:
        status = f"hit {self.hits} clips" if not self.computed else f"computed {self.computed} clips, hit {self.hits}"
        return status + (f", rebuilt {self.discarded_segments} damaged segment(s)" if self.discarded_segments else "")


class FrontendTable:
    """Every cached clip of an entry: a zero-copy fp16 [frames, channels] view into the memory-mapped segments."""

    def __init__(self, channels: int):
        self.channels = channels
        self._views: dict[int, tuple[np.ndarray, int, int, int]] = {}  # row -> (bytes, start, end, frames)

    def add_segment(self, reader: pa.ipc.RecordBatchFileReader) -> np.ndarray:
        rows = []
        for number in range(reader.num_record_batches):
            batch = reader.get_batch(number)
            column = batch.column("features")
            _, offsets_buffer, data_buffer = column.buffers()
            offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[column.offset : column.offset + len(column) + 1]
            data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
            frames = batch.column("num_frames").to_numpy()
            for i, row in enumerate(batch.column("row").to_numpy()):
                self._views[int(row)] = (data, int(offsets[i]), int(offsets[i + 1]), int(frames[i]))
                rows.append(int(row))
        return np.asarray(rows, dtype=np.int64)

    def __contains__(self, row: int) -> bool:
        return int(row) in self._views

    def num_frames(self, row: int) -> int:
        return self._views[int(row)][3]

    def clip(self, row: int) -> np.ndarray:
        data, start, end, frames = self._views[int(row)]
        return data[start:end].view("<f2").reshape(frames, self.channels)


def open_frontend_cache(
    directory: str | Path, key: str, rows: np.ndarray, channels: int, compute: Compute
) -> tuple[FrontendTable, CacheReport]:
    """The entry `key` under `directory`, holding every clip of `rows`: what it has, plus what `compute` adds.

    Without the lock first (every clip there and sound: nothing to write); else under the entry's lock, where
    damaged or uncommitted segments are deleted and the missing clips computed into a new segment.
    """
    entry = Path(directory) / key
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    table, _ = _load(entry, channels, repair=False)
    if all(row in table for row in rows):
        return table, CacheReport(hits=len(rows), computed=0)
    with locked(entry / ".lock"):
        table, discarded = _load(entry, channels, repair=True)
        missing = np.asarray([row for row in rows if row not in table], dtype=np.int64)
        if len(missing):
            table.add_segment(_open_segment(_write_segment(entry, missing, channels, compute)))
    return table, CacheReport(hits=len(rows) - len(missing), computed=len(missing), discarded_segments=discarded)


def _load(entry: Path, channels: int, repair: bool) -> tuple[FrontendTable, int]:
    """Every committed, sound segment of the entry; with `repair` (the lock held) the others are deleted."""
    table, discarded = FrontendTable(channels), 0
    if not entry.is_dir():
        return table, 0
    committed = set()
    for record_path in sorted(entry.glob("segment-*.json")):
        segment = record_path.with_suffix(".arrow")
        try:
            record = json.loads(record_path.read_text())
            verify_shard_once(segment, record["sha256"], record["num_bytes"])
            reader = _open_segment(segment)
            stored = np.concatenate(
                [reader.get_batch(n).column("row").to_numpy() for n in range(reader.num_record_batches)]
            )
            if record["channels"] != channels or sorted(stored.tolist()) != sorted(record["rows"]):
                raise ShardIntegrityError(f"{segment} holds other clips or widths than its record")
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):
            if repair:
                discarded += 1
                segment.unlink(missing_ok=True)
                record_path.unlink(missing_ok=True)
            continue
        table.add_segment(reader)
        committed.add(segment.name)
    if repair:  # a writer killed before its commit (its lock is free now): what it left is never read
        for leftover in entry.iterdir():
            if leftover.name.endswith(".tmp") or (leftover.suffix == ".arrow" and leftover.name not in committed):
                leftover.unlink(missing_ok=True)
    return table, discarded


def _open_segment(path: Path) -> pa.ipc.RecordBatchFileReader:
    reader = pa.ipc.open_file(pa.memory_map(str(path), "r"))
    if reader.schema.remove_metadata() != SEGMENT_SCHEMA.remove_metadata():
        raise ShardIntegrityError(f"{path} is not a front-end cache segment")
    return reader


def _write_segment(entry: Path, rows: np.ndarray, channels: int, compute: Compute) -> Path:
    """Compute the clips of `rows` into a new segment, renamed into place, then committed by its record."""
    entry.mkdir(parents=True, exist_ok=True)
    name = f"segment-{uuid.uuid4().hex[:16]}"
    segment, temporary = entry / f"{name}.arrow", entry / f".{name}.arrow.{os.getpid()}.tmp"
    written: list[int] = []
    try:
        with pa.OSFile(str(temporary), "wb") as sink, pa.ipc.new_file(sink, SEGMENT_SCHEMA) as writer:
            pending: list[tuple[int, np.ndarray]] = []
            for batch_rows, clips in compute(rows):
                for row, clip in zip(batch_rows, clips):
                    if clip.dtype != np.float16 or clip.ndim != 2 or clip.shape[1] != channels:
                        raise ValueError(
                            f"front-end output of row {row}: {clip.dtype} {clip.shape}, not fp16 [frames, {channels}]"
                        )
                    pending.append((int(row), clip))
                    written.append(int(row))
                while len(pending) >= CLIPS_PER_BATCH:
                    writer.write_batch(_record_batch(pending[:CLIPS_PER_BATCH]))
                    pending = pending[CLIPS_PER_BATCH:]
            if pending:
                writer.write_batch(_record_batch(pending))
        if sorted(written) != rows.tolist():
            raise RuntimeError(f"the front-end pass returned {len(written)} clips for {len(rows)} rows")
        os.replace(temporary, segment)
        record = {
            "format": FORMAT,
            "rows": written,
            "channels": channels,
            "num_bytes": segment.stat().st_size,
            "sha256": file_sha256(segment),
        }
        write_atomically(segment.with_suffix(".json"), json.dumps(record).encode())
    except BaseException:
        temporary.unlink(missing_ok=True)
        segment.unlink(missing_ok=True)
        raise
    return segment


def _record_batch(clips: list[tuple[int, np.ndarray]]) -> pa.RecordBatch:
    return pa.record_batch(
        [
            pa.array([row for row, _ in clips], pa.int64()),
            pa.array([len(clip) for _, clip in clips], pa.int32()),
            pa.array([np.ascontiguousarray(clip, dtype="<f2").tobytes() for _, clip in clips], pa.binary()),
        ],
        schema=SEGMENT_SCHEMA,
    )


def cache_size_bytes(seconds: float, channels: int, frames_per_second: float) -> float:
    """Bytes of fp16 front-end output for `seconds` of audio (the segments' few bytes per clip aside)."""
    return seconds * frames_per_second * channels * 2
