"""Memory-mapped access to a shard directory.

Shards are opened with `pa.memory_map`, so every trial on a node reads the same pages from the
page cache, and a clip's audio is a zero-copy `np.int16` view into the map.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from shards.integrity import verify_shards_once
from shards.writer import manifest_dimensions, manifest_labels, read_manifest


@dataclass(frozen=True)
class ClipIndex:
    """Metadata of every clip in a corpus as parallel numpy arrays (no audio)."""

    utterance_id: np.ndarray
    speaker: np.ndarray
    language: np.ndarray
    emotion: np.ndarray
    split: np.ndarray
    num_samples: np.ndarray
    label: np.ndarray  # index into the corpus's labels (ShardReader.labels)
    # float32 [clips, len(ShardReader.dimensions)]: arousal, valence, ... (NaN: none for the clip); [clips, 0] without
    dimensions: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.utterance_id)

    def select(self, speakers: list[str] | None = None, languages: list[str] | None = None) -> np.ndarray:
        """Row numbers of the clips of these speakers (and languages)."""
        keep = np.ones(len(self), dtype=bool)
        if speakers is not None:
            keep &= np.isin(self.speaker, list(speakers))
        if languages is not None:
            keep &= np.isin(self.language, list(languages))
        return np.flatnonzero(keep)


class ShardReader:
    """Random access to every clip of a shard directory by global row number."""

    def __init__(self, data_dir: str | Path):
        self.data_dir = Path(data_dir)
        self.manifest = read_manifest(self.data_dir)
        # One block per Arrow record batch: binary views stay zero-copy only within a batch.
        self._offsets: list[np.ndarray] = []  # per block: int32 byte offsets into the audio
        self._audio: list[np.ndarray] = []  # per block: the audio bytes as one int16 view
        columns: dict[str, list] = {
            n: [] for n in ("utterance_id", "speaker", "language", "emotion", "split", "num_samples")
        }
        dimension_columns: dict[str, list] = {d: [] for d in self.dimensions}
        block_of_row, row_in_block = [], []
        for entry in self.manifest["shards"]:
            shard = pa.ipc.open_file(pa.memory_map(str(self.data_dir / entry["path"]), "r"))
            for batch_number in range(shard.num_record_batches):
                batch = shard.get_batch(batch_number)
                for name in columns:
                    columns[name].append(batch.column(name).to_numpy(zero_copy_only=False))
                for name in dimension_columns:
                    values = batch.column(name).to_numpy(zero_copy_only=False)
                    dimension_columns[name].append(np.asarray(values, dtype=np.float32))
                offsets, samples = _binary_views(batch.column("audio"))
                block_of_row.append(np.full(batch.num_rows, len(self._audio), dtype=np.int32))
                row_in_block.append(np.arange(batch.num_rows, dtype=np.int32))
                self._offsets.append(offsets)
                self._audio.append(samples)
        merged = {n: np.concatenate(v) if v else np.array([]) for n, v in columns.items()}
        self._block_of_row = np.concatenate(block_of_row) if block_of_row else np.array([], dtype=np.int32)
        self._row_in_block = np.concatenate(row_in_block) if row_in_block else np.array([], dtype=np.int32)
        emotion_to_label = {e: i for i, e in enumerate(self.labels)}
        self.index = ClipIndex(
            utterance_id=merged["utterance_id"].astype(str),
            speaker=merged["speaker"].astype(str),
            language=merged["language"].astype(str),
            emotion=merged["emotion"].astype(str),
            split=merged["split"].astype(str),
            num_samples=merged["num_samples"].astype(np.int64),
            label=np.array([emotion_to_label[e] for e in merged["emotion"]], dtype=np.int64),
            dimensions=np.stack(
                [np.concatenate(v) if v else np.zeros(0, np.float32) for v in dimension_columns.values()], axis=1
            )
            if dimension_columns
            else np.zeros((len(merged["utterance_id"]), 0), dtype=np.float32),
        )

    verified_hash: str | None = None  # set by open_reader: the digest of the shard bytes checked on this node

    @property
    def labels(self) -> tuple[str, ...]:
        """The corpus's ordered label set: class index i is labels[i] (ESD's EMOTIONS for ESD)."""
        return manifest_labels(self.manifest)

    @property
    def dimensions(self) -> tuple[str, ...]:
        """The corpus's dimensional labels, in the column order of `index.dimensions` (() for most corpora)."""
        return tuple(manifest_dimensions(self.manifest))

    @property
    def dimension_scales(self) -> dict[str, list[float]]:
        """Each dimension's [low, high] scale as the manifest declares it."""
        return manifest_dimensions(self.manifest)

    @property
    def content_hash(self) -> str:
        """What caches built from these shards are keyed on: the verified bytes when checked, else the manifest."""
        return self.verified_hash or self.manifest["content_hash"]

    def __len__(self) -> int:
        return len(self.index)

    def audio(self, row: int) -> np.ndarray:
        """int16 samples of one clip: a view into the memory map, no copy."""
        block = self._block_of_row[row]
        r = self._row_in_block[row]
        offsets = self._offsets[block]
        # Offsets count bytes; int16 samples are 2 bytes each.
        return self._audio[block][offsets[r] // 2 : offsets[r + 1] // 2]


def _binary_views(array: pa.BinaryArray) -> tuple[np.ndarray, np.ndarray]:
    """Offsets and data buffer of a binary array as numpy views (zero copy)."""
    _, offsets_buf, data_buf = array.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32)[array.offset : array.offset + len(array) + 1]
    if data_buf is None or data_buf.size == 0:
        return offsets, np.zeros(0, dtype="<i2")
    data = np.frombuffer(data_buf, dtype=np.uint8)
    return offsets, data[: data.size - data.size % 2].view("<i2")


_OPEN_READERS: dict[tuple[str, int, int], ShardReader] = {}
# Corpora kept open per process: a trial's training corpus and its held-out corpora (--eval-data).
MAX_OPEN_READERS = 4


def open_reader(data_dir: str | Path) -> ShardReader:
    """A shared reader per corpus and process: trials on a reused worker skip re-reading the
    manifest and index (0.2 s for all of ESD). Re-opened when the manifest changes. Refuses shards that
    differ from their manifest (shards.integrity.ShardIntegrityError)."""
    from shards.writer import MANIFEST_NAME

    manifest = Path(data_dir).resolve() / MANIFEST_NAME
    verified_hash = verify_shards_once(manifest.parent)  # hashes a shard once per node and version; raises
    stat = manifest.stat()
    key = (str(manifest), stat.st_mtime_ns, stat.st_size)
    if key not in _OPEN_READERS:
        older_versions = [k for k in _OPEN_READERS if k[0] == key[0]]
        least_recent = list(_OPEN_READERS)[: -(MAX_OPEN_READERS - 1)]
        for stale in older_versions + least_recent:
            _OPEN_READERS.pop(stale, None)
        _OPEN_READERS[key] = ShardReader(manifest.parent)
    _OPEN_READERS[key].verified_hash = verified_hash
    return _OPEN_READERS[key]
