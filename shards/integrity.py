"""A trial never reads shards that differ from their manifest: every shard's sha256 is checked once per
node and shard version, not once per trial.

A shard version is its resolved path, size, mtime, inode and the manifest's hash for it; once its
bytes matched, a marker named after that version under `$EMOTION_SWEEP_CACHE/verified-shards/` (or
`~/.cache/emotion-sweep/verified-shards/`) lets every later open on the node skip the hashing: a
stat per shard. Rewriting or replacing a shard changes its mtime or inode, so it is hashed again.
The digest of the verified hashes is what caches built from the shards are keyed on.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from shards.writer import file_sha256, read_manifest


class ShardIntegrityError(ValueError):
    """A shard is missing, or its bytes differ from its manifest: training on it would be silently wrong."""


def markers_dir() -> Path:
    root = Path(os.environ.get("EMOTION_SWEEP_CACHE") or Path.home() / ".cache" / "emotion-sweep")
    return root / "verified-shards"


def verify_shards_once(data_dir: str | Path) -> str:
    """Check every shard of `data_dir` against its manifest (hashing only shard versions not yet verified
    on this node); returns the digest of the verified shard hashes. Raises ShardIntegrityError naming the shard."""
    data_dir = Path(data_dir).resolve()
    verified = [
        verify_shard_once(data_dir / entry["path"], entry["sha256"], entry["num_bytes"])
        for entry in read_manifest(data_dir)["shards"]
    ]
    # The manifest's content_hash has the same construction, so a verified corpus keeps its data hash.
    return hashlib.sha256("".join(verified).encode()).hexdigest()


def verify_shard_once(path: Path, expected_sha256: str, expected_bytes: int) -> str:
    """The shard's sha256, from its marker when this version was verified before."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ShardIntegrityError(f"shard {path} is missing (listed in its manifest)") from None
    marker = markers_dir() / f"{shard_version(path, stat, expected_sha256)}.ok"
    if marker.exists():
        return expected_sha256
    if stat.st_size != expected_bytes:
        raise ShardIntegrityError(
            f"shard {path} has {stat.st_size} bytes, its manifest says {expected_bytes}: truncated or replaced; "
            + _remedy(path)
        )
    actual = file_sha256(path)
    if actual != expected_sha256:
        raise ShardIntegrityError(
            f"shard {path} is corrupt: its sha256 {actual[:16]}… differs from its manifest's {expected_sha256[:16]}…; "
            + _remedy(path)
        )
    _write_marker(marker)
    return actual


def _remedy(path: Path) -> str:
    return f"restore it or ingest again (`python -m orchestrator.ingest verify {path.parent}` lists every problem)"


def shard_version(path: Path, stat: os.stat_result, expected_sha256: str) -> str:
    fields = [str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino, expected_sha256]
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


def _write_marker(marker: Path) -> None:
    marker.parent.mkdir(parents=True, exist_ok=True)
    temporary = marker.with_name(f"{marker.name}.{os.getpid()}.tmp")
    temporary.touch()
    temporary.replace(marker)  # atomic: a concurrent trial sees no marker or a whole one
