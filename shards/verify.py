"""Re-read every shard of a data directory and check it against the manifest.

Checks file hashes and sizes, the schema, row counts, the rows' utterance ids, and (where the
manifest lists utterances, as an ESD ingest does) every row's speaker, language, emotion, split and
length; then the totals, the per speaker x emotion counts, the content hash and the split plans.
Works on any shard directory (the demo corpus too).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from shards.schema import SAMPLE_RATE, clip_schema
from shards.splits import SPLITS_NAME, SpeakerLeakError, load_plans
from shards.writer import file_sha256, manifest_dimensions, manifest_labels, read_manifest

CHECKED_COLUMNS = ("speaker", "emotion", "split", "num_samples")


def verify_corpus(data_dir: str | Path) -> list[str]:
    """Every mismatch between the shards and the manifest, as readable lines (empty: all good)."""
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    problems: list[str] = []
    utterances: dict[str, dict] = manifest.get("utterances", {})
    seen: Counter[str] = Counter()
    counts: dict[str, Counter] = {}
    total_samples = 0
    for entry in manifest["shards"]:
        table = _read_shard(data_dir, entry, problems, manifest)
        if table is None:
            continue
        rows = table.select([*CHECKED_COLUMNS, "utterance_id", "language", "sample_rate"]).to_pylist()
        if "utterance_ids" in entry and [r["utterance_id"] for r in rows] != entry["utterance_ids"]:
            problems.append(f"{entry['path']}: its utterance ids differ from the manifest's list")
        lengths = pc.binary_length(table.column("audio")).to_pylist()
        for row, num_bytes in zip(rows, lengths):
            problems.extend(_check_row(entry["path"], row, num_bytes, manifest, utterances))
            seen[row["utterance_id"]] += 1
            counts.setdefault(row["speaker"], Counter())[row["emotion"]] += 1
            total_samples += row["num_samples"]
    problems.extend(f"{u}: in {n} rows" for u, n in sorted(seen.items()) if n > 1)
    problems.extend(f"{u}: listed in the manifest but in no shard" for u in sorted(set(utterances) - set(seen)))
    problems.extend(_check_totals(manifest, seen, counts, total_samples))
    problems.extend(_check_plans(data_dir, manifest))
    return problems


def _read_shard(data_dir: Path, entry: dict, problems: list[str], manifest: dict) -> pa.Table | None:
    path = data_dir / entry["path"]
    if not path.is_file():
        problems.append(f"{entry['path']}: missing")
        return None
    if path.stat().st_size != entry["num_bytes"]:
        problems.append(f"{entry['path']}: {path.stat().st_size} bytes, the manifest says {entry['num_bytes']}")
    if file_sha256(path) != entry["sha256"]:
        problems.append(f"{entry['path']}: sha256 differs from the manifest (the file changed or is corrupt)")
    try:
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
    except (pa.ArrowInvalid, OSError) as error:
        problems.append(f"{entry['path']}: not a readable Arrow file ({error})")
        return None
    if not table.schema.equals(clip_schema(tuple(manifest_dimensions(manifest)))):
        problems.append(f"{entry['path']}: schema differs from the corpus's (CLIP_SCHEMA and its dimensions)")
        return None
    if table.num_rows != entry["num_rows"]:
        problems.append(f"{entry['path']}: {table.num_rows} rows, the manifest says {entry['num_rows']}")
    return table


def _check_row(shard: str, row: dict, num_bytes: int, manifest: dict, utterances: dict) -> list[str]:
    where = f"{shard}: {row['utterance_id']}"
    problems = []
    if row["emotion"] not in manifest_labels(manifest):
        problems.append(f"{where}: unknown emotion {row['emotion']!r}")
    if row["sample_rate"] != SAMPLE_RATE or num_bytes != 2 * row["num_samples"]:
        problems.append(f"{where}: audio is not {row['num_samples']} int16 samples at {SAMPLE_RATE} Hz")
    speaker = manifest["speakers"].get(row["speaker"])
    if speaker is None or speaker["language"] != row["language"]:
        problems.append(f"{where}: speaker {row['speaker']} / language {row['language']} not as in the manifest")
    record = utterances.get(row["utterance_id"])
    if utterances and record is None:
        problems.append(f"{where}: not listed in the manifest's utterances")
    elif record is not None:
        for column in CHECKED_COLUMNS:
            if record[column] != row[column]:
                problems.append(f"{where}: {column} is {row[column]!r}, the manifest says {record[column]!r}")
    return problems


def _check_totals(manifest: dict, seen: Counter, counts: dict[str, Counter], total_samples: int) -> list[str]:
    problems = []
    if manifest["num_clips"] != sum(seen.values()):
        problems.append(f"manifest says {manifest['num_clips']} clips, the shards hold {sum(seen.values())}")
    # Shard seconds are rounded to 1 ms in the manifest.
    if abs(manifest["total_seconds"] - total_samples / SAMPLE_RATE) > 0.001 * (len(manifest["shards"]) + 1):
        problems.append(
            f"manifest says {manifest['total_seconds']} s, the shards hold {total_samples / SAMPLE_RATE:.3f} s"
        )
    for speaker in sorted(set(manifest["counts"]) | set(counts)):
        expected = {e: n for e, n in manifest["counts"].get(speaker, {}).items() if n}
        if expected != dict(counts.get(speaker, {})):
            problems.append(
                f"speaker {speaker}: counts per emotion {dict(counts.get(speaker, {}))}, the manifest says {expected}"
            )
    content_hash = hashlib.sha256("".join(e["sha256"] for e in manifest["shards"]).encode()).hexdigest()
    if content_hash != manifest["content_hash"]:
        problems.append("content_hash does not match the shards' hashes")
    return problems


def _check_plans(data_dir: Path, manifest: dict) -> list[str]:
    if not (data_dir / SPLITS_NAME).exists():
        # An ingest always writes one; older demo corpora may predate it (plans then come from the manifest).
        ingested = manifest.get("source", {}).get("kind") not in (None, "demo")
        return [f"{SPLITS_NAME} is missing"] if ingested else []
    try:
        plans = load_plans(data_dir)
    except (SpeakerLeakError, ValueError, KeyError) as error:
        return [f"{SPLITS_NAME}: {error}"]
    known = set(manifest["speakers"])
    return [
        f"{SPLITS_NAME}: plan {plan.name} names speakers not in the corpus: {sorted(unknown)}"
        for members in plans.values()
        for plan in members
        if (unknown := (set(plan.train_speakers) | {s for g in plan.eval_sets.values() for s in g}) - known)
    ]
