"""Ingest any labelled corpus, given as a list of entries, through ESD's machinery.

A front end (shards.table for a CSV/JSONL table, shards.corpora for a named release) turns its
source into `Entry`s, one per audio file, and names every row or file it cannot use. Everything
after that is shared: decoding on all cores (shards.source_decode via shards.parallel), one shard
writer, a manifest that declares the corpus's ordered label set and each speaker's language,
per-speaker journals that make re-runs incremental, and split plans (shards.splits.corpus_plans).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shards.esd import (
    MIN_FILES_PER_WORKER,
    STATE_DIR,
    IngestResult,
    _crashed,
    _exclusive,
    _Meter,
    _remove_temp_files,
)
from shards.parallel import map_ordered
from shards.schema import SAMPLE_RATE, Clip
from shards.source_decode import Decoded, decode_source
from shards.splits import corpus_plans, write_plans
from shards.writer import (
    DEFAULT_MAX_SHARD_BYTES,
    MANIFEST_NAME,
    SHARD_DIR,
    ShardWriter,
    file_sha256,
    read_manifest,
    safe_name,
    write_atomically,
)

# Bump when a change here would change the shards of unchanged sources: forces re-processing.
CORPUS_INGEST_VERSION = 1
JOURNAL_FORMAT = "corpus-ingest-speaker/1"
NO_SPLIT = "unsplit"
GENDERS = {"f": "F", "female": "F", "w": "F", "woman": "F", "m": "M", "male": "M", "man": "M"}
SHARD_FILE = re.compile(r"^[a-z]{2,3}-[A-Za-z0-9._-]+-[0-9a-f]{10}-\d{4}\.arrow$")


@dataclass(frozen=True)
class Entry:
    """One audio file with its label and speaker, as a front end found it."""

    origin: str  # where it was found: "line 12" of a table, or the file's path in a release
    path: Path  # absolute path of the audio file
    rel: str  # the path as the manifest records it
    utterance_id: str
    label: str
    speaker: str
    language: str
    split: str = NO_SPLIT
    transcript: str = ""
    gender: str = "unknown"
    session: str = ""
    # Dimensional labels the release gives this file: name -> value on the corpus's scale ({}: none).
    dimensions: dict[str, float] = field(default_factory=dict)


@dataclass
class CorpusScan:
    """What a front end found: the usable entries, the bad ones with reasons, and the corpus's facts."""

    kind: str  # "table", "ravdess", ...
    root: Path
    labels: tuple[str, ...]  # the ordered label set
    entries: list[Entry] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {"path" or "line", "reason"}
    official_splits: bool = False  # the release's splits are speaker-independent: plan "official"
    notes: dict = field(default_factory=dict)  # front-end specific facts for the manifest's "source"
    # The corpus's dimensional labels: name -> [low, high] of the scale, in shards.schema.DIMENSIONS order
    # ({}: none, and nothing about the shards or the manifest changes).
    dimensions: dict[str, list[float]] = field(default_factory=dict)


def normalize_gender(text: str | None) -> str:
    return GENDERS.get((text or "").strip().lower(), "unknown")


def ingest_corpus(
    scan: CorpusScan,
    out_dir: str | Path,
    workers: int | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    progress: Callable[[str], None] | None = None,
) -> IngestResult:
    """Decode and shard every entry of the scan into `out_dir`; bad files are skipped and named."""
    progress = progress or (lambda line: None)
    out_dir = Path(out_dir).resolve()
    if not scan.entries:
        reasons = "; ".join(f"{_where(x)}: {x['reason']}" for x in scan.skipped[:3])
        raise FileNotFoundError(f"no usable {scan.kind} clips under {scan.root}" + (f" ({reasons})" if reasons else ""))
    _refuse_other_corpus(out_dir, scan.kind)
    (out_dir / STATE_DIR).mkdir(parents=True, exist_ok=True)
    with _exclusive(out_dir):
        _remove_temp_files(out_dir)
        by_speaker, metadata, conflicts = _group(scan)
        settings = {
            "version": CORPUS_INGEST_VERSION,
            "max_shard_bytes": max_shard_bytes,
            "labels": list(scan.labels),
        }
        if scan.dimensions:
            settings["dimensions"] = scan.dimensions
        fingerprints = {s: _fingerprint(settings, metadata[s], entries) for s, entries in by_speaker.items()}
        writer = ShardWriter(
            out_dir,
            speakers=metadata,
            max_shard_bytes=max_shard_bytes,
            speaker_tags={s: f[:10] for s, f in fingerprints.items()},
            labels=scan.labels,
            dimensions=tuple(scan.dimensions),
        )
        journals = {}
        for speaker, entries in by_speaker.items():
            journal = _reusable_journal(out_dir, speaker, fingerprints[speaker], entries)
            if journal is not None:
                writer.adopt(journal["shards"], {speaker: journal["counts"]})
                journals[speaker] = journal
        result = IngestResult({}, out_dir, reused=list(journals))
        progress(f"found {len(scan.entries)} {scan.kind} clips of {len(by_speaker)} speakers under {scan.root}")
        if result.reused:
            progress(f"reusing {len(result.reused)} unchanged speakers")
        started = time.perf_counter()
        todo = [s for s in by_speaker if s not in journals]
        for speaker, decoded in _decode(todo, by_speaker, workers, progress):
            journals[speaker] = _write_speaker(writer, speaker, by_speaker[speaker], decoded, fingerprints, out_dir)
            result.processed.append(speaker)
            result.num_decoded_files += len(decoded)
        result.decode_seconds = time.perf_counter() - started
        kept = {s: metadata[s] for s in sorted(journals) if journals[s]["utterances"]}
        _mark_official_splits(scan, kept, journals)
        writer.speakers = kept
        writer.extra_manifest = _manifest_section(scan, journals, conflicts)
        result.manifest = writer.close()
        write_plans(out_dir, kept, corpus_plans(kept))
        _remove_unreferenced(out_dir, result.manifest, set(by_speaker))
    return result


def _where(skipped: dict) -> str:
    return f"line {skipped['line']}" if "line" in skipped else skipped.get("path", "?")


# --- speakers ------------------------------------------------------------------------------------


def _group(scan: CorpusScan) -> tuple[dict[str, list[Entry]], dict[str, dict], list[dict]]:
    """Entries by speaker; each speaker's metadata (from its first entry); entries that contradict it."""
    by_speaker: dict[str, list[Entry]] = {}
    metadata: dict[str, dict] = {}
    conflicts = []
    for entry in scan.entries:
        meta = metadata.setdefault(entry.speaker, _speaker_metadata(entry))
        if meta["language"] != entry.language:
            conflicts.append(
                {
                    "origin": entry.origin,
                    "reason": f"speaker {entry.speaker} is {meta['language']} elsewhere, {entry.language} here: "
                    f"the clip is kept as {meta['language']}",
                }
            )
        by_speaker.setdefault(entry.speaker, []).append(entry)
    return dict(sorted(by_speaker.items())), metadata, conflicts


def _speaker_metadata(entry: Entry) -> dict:
    meta = {"language": entry.language, "gender": entry.gender}
    if entry.session:
        meta["session"] = entry.session
    return meta


def _mark_official_splits(scan: CorpusScan, speakers: dict[str, dict], journals: dict[str, dict]) -> None:
    """'official_split' on every speaker (the official plan's input), if the corpus's splits are
    speaker-independent: one speaker in two splits (a per-utterance split, like ESD's) means no plan."""
    if not scan.official_splits:
        return
    splits = {s: {u["split"] for u in journals[s]["utterances"].values()} for s in speakers}
    spanning = sorted(s for s, found in splits.items() if len(found) > 1 or NO_SPLIT in found)
    if spanning:
        scan.notes["official_split_plan"] = f"none: speakers without exactly one split: {spanning[:10]}"
        return
    for speaker, meta in speakers.items():
        meta["official_split"] = splits[speaker].pop()


# --- reuse ---------------------------------------------------------------------------------------


def _fingerprint(settings: dict, metadata: dict, entries: list[Entry]) -> str:
    described = [[e.rel, e.utterance_id, e.label, e.split, e.transcript] for e in entries]
    if "dimensions" in settings:  # only then: the journals of corpora without dimensions stay valid
        described = [[*d, e.dimensions] for d, e in zip(described, entries)]
    text = json.dumps([settings, metadata, described], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _journal_path(out_dir: Path, speaker: str) -> Path:
    return out_dir / STATE_DIR / f"{safe_name(speaker)}.json"


def _reusable_journal(out_dir: Path, speaker: str, fingerprint: str, entries: list[Entry]) -> dict | None:
    """An earlier run's journal if labels, settings and sources are unchanged and its shards intact.

    A source counts as unchanged when its size matches and either its mtime or its sha256 does.
    """
    try:
        journal = json.loads(_journal_path(out_dir, speaker).read_text())
    except (OSError, ValueError):
        return None
    if journal.get("format") != JOURNAL_FORMAT or journal.get("fingerprint") != fingerprint:
        return None
    recorded = journal["files"]
    if set(recorded) != {e.rel for e in entries}:
        return None
    for entry in entries:
        try:
            stat = entry.path.stat()
        except OSError:
            return None
        size, mtime_ns, sha256 = recorded[entry.rel]
        if size != stat.st_size or (mtime_ns != stat.st_mtime_ns and sha256 != file_sha256(entry.path)):
            return None
    for shard in journal["shards"]:
        path = out_dir / shard["path"]
        if not path.is_file() or path.stat().st_size != shard["num_bytes"] or file_sha256(path) != shard["sha256"]:
            return None
    return journal


# --- decoding and writing ------------------------------------------------------------------------


def _decode(todo: list[str], by_speaker: dict[str, list[Entry]], workers: int | None, progress):
    jobs = [(str(e.path), e.rel) for s in todo for e in by_speaker[s]]
    if not jobs:
        return
    if workers is None:
        workers = max(1, min(os.cpu_count() or 1, len(jobs) // MIN_FILES_PER_WORKER))
    meter = _Meter(len(jobs), progress)
    results = map_ordered(decode_source, jobs, workers, on_crash=_crashed)
    try:
        for speaker in todo:
            decoded = []
            for _ in by_speaker[speaker]:
                decoded.append(next(results))
                meter.step(speaker)
            yield speaker, decoded
    finally:
        results.close()
    meter.finish()


def _write_speaker(
    writer: ShardWriter,
    speaker: str,
    entries: list[Entry],
    decoded: list[Decoded],
    fingerprints: dict[str, str],
    out_dir: Path,
) -> dict:
    language = writer.speakers[speaker]["language"]
    journal = {
        "format": JOURNAL_FORMAT,
        "speaker": speaker,
        "fingerprint": fingerprints[speaker],
        "files": {},
        "shards": [],
        "counts": {},
        "utterances": {},
        "skipped": [],
    }
    kept: dict[str, Entry] = {}
    for entry, result in zip(entries, decoded):
        journal["files"][entry.rel] = [*_stat(entry.path), result.sha256]
        reason = result.reason
        if reason is None and entry.utterance_id in kept:
            reason = f"duplicate utterance id {entry.utterance_id} (first: {kept[entry.utterance_id].origin})"
        if reason:
            journal["skipped"].append({**_origin(entry), "reason": reason})
            continue
        kept[entry.utterance_id] = entry
        values = tuple(float(entry.dimensions.get(d, math.nan)) for d in writer.dimensions)
        writer.add(
            Clip(
                entry.utterance_id,
                speaker,
                language,
                entry.label,
                entry.split,
                entry.transcript,
                result.audio,
                dimensions=values,
            )
        )
        journal["utterances"][entry.utterance_id] = _utterance_record(entry, result)
        journal["counts"][entry.label] = journal["counts"].get(entry.label, 0) + 1
    if journal["utterances"]:
        journal["shards"] = writer.flush_speaker(speaker)
    write_atomically(_journal_path(out_dir, speaker), json.dumps(journal, ensure_ascii=False).encode())
    return journal


def _stat(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError:
        return -1, -1
    return stat.st_size, stat.st_mtime_ns


def _origin(entry: Entry) -> dict:
    """A bad entry's location: its table line (and file), or its file in a release."""
    if entry.origin.startswith("line "):
        return {"line": int(entry.origin.removeprefix("line ")), "path": entry.rel}
    return {"path": entry.rel}


def _utterance_record(entry: Entry, result: Decoded) -> dict:
    record = {
        "speaker": entry.speaker,
        "path": entry.rel,
        "sha256": result.sha256,
        "num_samples": len(result.audio),
        "seconds": round(len(result.audio) / SAMPLE_RATE, 4),
        "emotion": entry.label,
        "split": entry.split,
    }
    if entry.dimensions:
        record["dimensions"] = entry.dimensions
    if (result.source_rate, result.source_channels) != (SAMPLE_RATE, 1):
        record["converted_from"] = {"sample_rate": result.source_rate, "channels": result.source_channels}
    return record


# --- the manifest and the data directory ---------------------------------------------------------


def _manifest_section(scan: CorpusScan, journals: dict[str, dict], conflicts: list[dict]) -> dict:
    speakers = sorted(journals)
    utterances = {u: r for s in speakers for u, r in journals[s]["utterances"].items()}
    skipped = scan.skipped + [x for s in speakers for x in journals[s]["skipped"]]
    return {
        "source": {
            "kind": scan.kind,
            "root": str(scan.root),
            "ingest_version": CORPUS_INGEST_VERSION,
            "num_entries": len(scan.entries),
            **scan.notes,
        },
        **({"dimensions": scan.dimensions} if scan.dimensions else {}),
        "utterances": dict(sorted(utterances.items())),
        "skipped": sorted(skipped, key=lambda x: (x.get("line", 0), x.get("path", ""))),
        "speaker_conflicts": conflicts,
    }


def _refuse_other_corpus(out_dir: Path, kind: str) -> None:
    if (out_dir / MANIFEST_NAME).exists():
        found = read_manifest(out_dir).get("source", {}).get("kind")
        if found != kind:
            raise FileExistsError(f"{out_dir} already holds a {found or 'demo'} corpus; choose another --out")


def _remove_unreferenced(out_dir: Path, manifest: dict, speakers: set[str]) -> None:
    referenced = {Path(e["path"]).name for e in manifest["shards"]}
    for path in (out_dir / SHARD_DIR).iterdir():
        if SHARD_FILE.match(path.name) and path.name not in referenced:
            path.unlink(missing_ok=True)
    journals = {f"{safe_name(s)}.json" for s in speakers}
    for path in (out_dir / STATE_DIR).glob("*.json"):
        if path.name not in journals:
            path.unlink(missing_ok=True)
