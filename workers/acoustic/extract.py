"""openSMILE functionals of every clip of a corpus: computed once per corpus and feature set, shared.

The ESD paper's baseline classifies utterance-level openSMILE functionals. Extraction costs ~50 ms
a clip (35,000 clips of ESD: ~30 min on one core), so it runs once, on every core, and the result
is stored as one Arrow table per corpus and feature set:

    <data_dir>/acoustic_features/<feature_set>-<content_hash[:16]>.arrow
        utterance_id (string), then one float32 column per feature, rows in the reader's order;
        schema metadata: feature_set, content_hash (the manifest's)

A new content hash (the shards changed) is a new file, and the stale one is removed. Writers hold
a file lock and rename atomically, so concurrent trials on a node compute a table once. When the
shard directory is read-only the table goes to $EMOTION_SWEEP_CACHE/acoustic_features instead.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa

from shards.reader import ShardReader, open_reader
from shards.schema import SAMPLE_RATE
from workers.acoustic.config import DEFAULT_FEATURE_SET, FEATURE_SETS
from workers.core.file_lock import locked

TABLE_DIR = "acoustic_features"
_CLIPS_PER_TASK = 16  # ~1 s of work per task: small enough for even progress, large enough to amortise IPC


@dataclass(frozen=True)
class AcousticFeatures:
    """One row of functionals per clip of a corpus, in the reader's row order."""

    feature_set: str
    content_hash: str
    names: tuple[str, ...]
    utterance_id: np.ndarray
    values: np.ndarray  # float32 [clips, features]


def build_smile(feature_set: str):
    import opensmile

    if feature_set not in FEATURE_SETS:
        raise ValueError(f"feature_set {feature_set!r} is not one of {FEATURE_SETS}")
    return opensmile.Smile(
        feature_set=opensmile.FeatureSet[feature_set], feature_level=opensmile.FeatureLevel.Functionals
    )


def functionals(smile, audio: np.ndarray) -> np.ndarray:
    """float32 functionals of one clip: int16 samples or floats in [-1, 1], at SAMPLE_RATE."""
    signal = audio.astype(np.float32) / 32768.0 if audio.dtype == np.int16 else audio.astype(np.float32)
    return smile.process_signal(signal, SAMPLE_RATE).to_numpy(dtype=np.float32)[0]


def table_path(directory: str | Path, feature_set: str, content_hash: str) -> Path:
    return Path(directory) / f"{feature_set}-{content_hash[:16]}.arrow"


def default_table_dir(data_dir: str | Path) -> Path:
    """Beside the shards when that directory is writable, else the node's cache."""
    beside = Path(data_dir) / TABLE_DIR
    if os.access(beside if beside.exists() else Path(data_dir), os.W_OK):
        return beside
    root = Path(os.environ.get("EMOTION_SWEEP_CACHE", Path.home() / ".cache" / "emotion-sweep"))
    return root / TABLE_DIR


def load_or_extract(
    data_dir: str | Path,
    feature_set: str = DEFAULT_FEATURE_SET,
    directory: str | Path | None = None,
    num_workers: int | None = None,
) -> tuple[AcousticFeatures, str]:
    """The corpus's functionals from the stored table, or extracted once (under a lock) and stored.

    Returns (features, 'hit' | 'computed'). `num_workers`: extraction processes (None: every core).
    """
    reader = open_reader(data_dir)
    directory = Path(directory) if directory else default_table_dir(data_dir)
    path = table_path(directory, feature_set, reader.content_hash)
    stored = _read(path, feature_set, reader)
    if stored is not None:
        return stored, "hit"
    with locked(directory / f"{feature_set}.lock"):
        stored = _read(path, feature_set, reader)  # another trial may have written it while we waited
        if stored is not None:
            return stored, "hit"
        features = extract(reader, feature_set, num_workers)
        _write(path, features)
        if directory.resolve() == (Path(data_dir) / TABLE_DIR).resolve():  # a shared cache holds other corpora
            _remove_stale(directory, feature_set, keep=path)
    return features, "computed"


def extract(reader: ShardReader, feature_set: str, num_workers: int | None = None) -> AcousticFeatures:
    """Functionals of every clip of `reader`, over a process pool; progress on stderr."""
    num_workers = max(1, num_workers or os.cpu_count() or 1)
    rows = np.arange(len(reader))
    chunks = [rows[i : i + _CLIPS_PER_TASK] for i in range(0, len(rows), _CLIPS_PER_TASK)]
    names = tuple(build_smile(feature_set).feature_names)
    values = np.zeros((len(rows), len(names)), dtype=np.float32)
    progress = _Progress(feature_set, len(rows))
    if num_workers == 1:
        _init_worker(str(reader.data_dir), feature_set)
        for chunk in chunks:
            values[chunk] = _extract_rows(chunk)
            progress.advance(len(chunk))
    else:
        # spawn: a forked copy of a trial process (torch threads, Ray sockets) is not safe to run.
        with ProcessPoolExecutor(
            num_workers,
            mp_context=get_context("spawn"),
            initializer=_init_worker,
            initargs=(str(reader.data_dir), feature_set),
        ) as pool:
            for chunk, result in zip(chunks, pool.map(_extract_rows, chunks)):
                values[chunk] = result
                progress.advance(len(chunk))
    progress.close()
    return AcousticFeatures(feature_set, reader.content_hash, names, reader.index.utterance_id.copy(), values)


_WORKER: dict = {}


def _init_worker(data_dir: str, feature_set: str) -> None:
    _WORKER["reader"] = open_reader(data_dir)
    _WORKER["smile"] = build_smile(feature_set)


def _extract_rows(rows: np.ndarray) -> np.ndarray:
    reader, smile = _WORKER["reader"], _WORKER["smile"]
    return np.stack([functionals(smile, reader.audio(int(r))) for r in rows])


class _Progress:
    """'acoustic features eGeMAPSv02: 320/1080 clips, 41.2 clips/s, ~18 s left' about every 2 s."""

    def __init__(self, feature_set: str, total: int):
        self.label = f"acoustic features {feature_set}"
        self.total = total
        self.done = 0
        self.started = self.last_print = time.perf_counter()

    def advance(self, clips: int) -> None:
        self.done += clips
        now = time.perf_counter()
        if now - self.last_print >= 2.0:
            self.last_print = now
            rate = self.done / max(now - self.started, 1e-9)
            left = (self.total - self.done) / max(rate, 1e-9)
            print(
                f"{self.label}: {self.done}/{self.total} clips, {rate:.1f} clips/s, ~{left:.0f} s left",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        seconds = time.perf_counter() - self.started
        rate = self.done / max(seconds, 1e-9)
        print(f"{self.label}: {self.done} clips in {seconds:.1f} s ({rate:.1f} clips/s)", file=sys.stderr, flush=True)


def _write(path: Path, features: AcousticFeatures) -> None:
    columns = {"utterance_id": pa.array(features.utterance_id, type=pa.string())}
    columns.update({name: pa.array(features.values[:, i]) for i, name in enumerate(features.names)})
    metadata = {"feature_set": features.feature_set, "content_hash": features.content_hash}
    table = pa.table(columns).replace_schema_metadata(metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with pa.OSFile(str(temporary), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    os.replace(temporary, path)


def _read(path: Path, feature_set: str, reader: ShardReader) -> AcousticFeatures | None:
    """The stored table if it is this corpus's (same content hash and clips), else None."""
    if not path.exists():
        return None
    table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
    metadata = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    if metadata.get("content_hash") != reader.content_hash or metadata.get("feature_set") != feature_set:
        return None  # a 16-character prefix collision or a foreign file: recompute
    utterance_id = table.column("utterance_id").to_numpy(zero_copy_only=False).astype(str)
    if not np.array_equal(utterance_id, reader.index.utterance_id):
        return None
    names = tuple(n for n in table.column_names if n != "utterance_id")
    values = np.stack([table.column(n).to_numpy() for n in names], axis=1).astype(np.float32, copy=False)
    return AcousticFeatures(feature_set, reader.content_hash, names, utterance_id, values)


def _remove_stale(directory: Path, feature_set: str, keep: Path) -> None:
    """Tables of this feature set computed from earlier versions of the shards."""
    for old in directory.glob(f"{feature_set}-*.arrow"):
        if old != keep:
            old.unlink(missing_ok=True)
