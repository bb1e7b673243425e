"""Ingest an ESD download into shards: every good clip kept, every bad file named, re-runs incremental.

The work is done speaker by speaker. When a speaker's shards are written, a small journal
(`.ingest/<speaker>.json`) records what they were built from; an interrupted run keeps the
speakers it finished, and a re-run reuses every speaker whose sources, transcript lines and
settings are unchanged and whose shards still hash to what the journal says. Shards carry a tag
of their speaker's inputs in their names, so re-processing a speaker never overwrites a shard the
current manifest points at; the new manifest replaces the old one in one rename, and shards no
manifest points at are removed after that.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from shards.esd_layout import (
    ID_BLOCK_ORDER,
    UTTERANCES_PER_EMOTION,
    SourceFile,
    TreeScan,
    esd_language,
    id_block_emotion,
    id_split,
    relative,
    scan_tree,
)
from shards.parallel import map_ordered
from shards.schema import SAMPLE_RATE, Clip
from shards.source_decode import Decoded, decode_source
from shards.splits import write_plans
from shards.transcripts import Transcript, TranscriptLine, is_chinese_text, read_speaker_info, read_transcript
from shards.writer import (
    DEFAULT_MAX_SHARD_BYTES,
    MANIFEST_NAME,
    SHARD_DIR,
    ShardWriter,
    file_sha256,
    read_manifest,
    write_atomically,
)

# Bump when a change to ingest would change the shards of unchanged sources: forces re-processing.
INGEST_VERSION = 1
STATE_DIR = ".ingest"
# Starting a decoder process costs about a second (imports); below this many files each, one process is faster.
MIN_FILES_PER_WORKER = 500
JOURNAL_FORMAT = "esd-ingest-speaker/1"
SHARD_FILE = re.compile(r"^(en|zh)-\d{4}(-[0-9a-f]+)?-\d{4}\.arrow$")
TEMP_FILE = re.compile(r"^\..*\.tmp$")
MAX_ESD_NUMBER = UTTERANCES_PER_EMOTION * len(ID_BLOCK_ORDER)
NO_LABEL = (
    "no emotion: no emotion folder above it, no emotion on its transcript line, and its "
    f"utterance number is outside ESD's 1-{MAX_ESD_NUMBER}"
)


@dataclass
class SpeakerInputs:
    """What one speaker's shards are built from, known before any audio is read."""

    speaker: str
    language: str
    files: list[SourceFile]
    transcript_digest: str
    settings: dict

    @property
    def fingerprint(self) -> str:
        stats = [(f.rel, f.size, f.mtime_ns) for f in self.files]
        text = json.dumps([self.settings, self.transcript_digest, stats])
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class IngestResult:
    manifest: dict
    out_dir: Path
    reused: list[str] = field(default_factory=list)  # speakers taken from an earlier run
    processed: list[str] = field(default_factory=list)  # speakers decoded in this run
    num_decoded_files: int = 0
    decode_seconds: float = 0.0

    @property
    def files_per_second(self) -> float:
        return self.num_decoded_files / self.decode_seconds if self.decode_seconds > 0 else 0.0


def ingest_esd(
    root: str | Path,
    out_dir: str | Path,
    workers: int | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    progress: Callable[[str], None] | None = None,
) -> IngestResult:
    """Ingest the ESD tree under `root` into `out_dir` (shards, manifest.json, splits.json).

    workers: decoder processes; None uses every core, or decodes in this process when there is
    too little work to pay for starting a pool.
    """
    progress = progress or (lambda line: None)
    out_dir = Path(out_dir).resolve()
    scan = scan_tree(root)
    if not scan.sources:
        raise FileNotFoundError(f"no ESD clips (SSSS_NNNNNN.wav) anywhere under {scan.root}")
    _refuse_foreign_corpus(out_dir)
    (out_dir / STATE_DIR).mkdir(parents=True, exist_ok=True)
    with _exclusive(out_dir):
        _remove_temp_files(out_dir)
        transcripts, transcript_report = _read_transcripts(scan)
        genders, info_file = _read_genders(scan)
        inputs, unknown_language = _speaker_inputs(scan, transcripts, max_shard_bytes)
        progress(
            f"found {sum(len(f) for f in scan.sources.values())} clip files of {len(scan.sources)} speakers "
            f"under {scan.root}"
        )
        metadata = {s: {"language": i.language, "gender": genders.get(s, "unknown")} for s, i in inputs.items()}
        writer = ShardWriter(
            out_dir,
            speakers=metadata,
            max_shard_bytes=max_shard_bytes,
            speaker_tags={s: i.fingerprint[:10] for s, i in inputs.items()},
        )
        journals = _adopt_unchanged(out_dir, inputs, writer)
        result = IngestResult({}, out_dir, reused=list(journals))
        if result.reused:
            progress(f"reusing {len(result.reused)} unchanged speakers: {' '.join(result.reused)}")
        started = time.perf_counter()
        todo = [i for s, i in inputs.items() if s not in journals]
        for speaker_inputs, decoded in _decode(todo, workers, progress):
            journals[speaker_inputs.speaker] = _write_speaker(writer, speaker_inputs, decoded, transcripts, out_dir)
            result.processed.append(speaker_inputs.speaker)
            result.num_decoded_files += len(decoded)
        result.decode_seconds = time.perf_counter() - started
        writer.speakers = {s: metadata[s] for s in sorted(journals) if journals[s]["utterances"]}
        writer.extra_manifest = _esd_manifest_section(scan, journals, transcript_report, info_file, unknown_language)
        result.manifest = writer.close()  # the one rename that switches readers to the new corpus
        write_plans(out_dir, result.manifest["speakers"])
        _remove_unreferenced(out_dir, result.manifest, set(inputs))
    return result


# --- what each speaker is built from -------------------------------------------------------------


def _read_transcripts(scan: TreeScan) -> tuple[dict[str, TranscriptLine], list[dict]]:
    """Every transcript line by utterance id (the first file to name an id wins), and a report per file."""
    lines: dict[str, TranscriptLine] = {}
    report = []
    for speaker in sorted(scan.transcripts):
        for path in sorted(scan.transcripts[speaker]):
            try:
                transcript = read_transcript(path.read_bytes(), esd_language(speaker))
            except OSError as error:
                report.append({"path": relative(scan.root, path), "error": f"unreadable: {error.strerror}"})
                continue
            for utterance_id, line in transcript.lines.items():
                lines.setdefault(utterance_id, line)
            report.append(_transcript_entry(relative(scan.root, path), transcript))
    return lines, report


def _transcript_entry(rel: str, transcript: Transcript) -> dict:
    entry = {
        "path": rel,
        "encoding": transcript.encoding,
        "num_lines": len(transcript.lines),
        "num_without_emotion": sum(1 for line in transcript.lines.values() if line.emotion is None),
    }
    if transcript.unparsed:
        entry["unparsed_lines"] = transcript.unparsed
    if transcript.duplicates:
        entry["duplicate_ids"] = transcript.duplicates
    return entry


def _read_genders(scan: TreeScan) -> tuple[dict[str, str], str | None]:
    """Genders from the first text file in the tree that lists speakers ('0001: Chinese Female')."""
    for path in sorted(scan.info_files):
        try:
            genders = read_speaker_info(path.read_bytes())
        except OSError:
            continue
        if genders:
            return genders, relative(scan.root, path)
    return {}, None


def _speaker_inputs(
    scan: TreeScan, transcripts: dict[str, TranscriptLine], max_shard_bytes: int
) -> tuple[dict[str, SpeakerInputs], list[dict]]:
    inputs, unknown = {}, []
    for speaker in sorted(scan.sources):
        files = scan.sources[speaker]
        lines = [(f.utterance_id, transcripts.get(f.utterance_id)) for f in files]
        language = esd_language(speaker)
        if language is None:
            texts = " ".join(line.text for _, line in lines if line is not None)
            language = ("zh" if is_chinese_text(texts) else "en") if texts.strip() else None
        if language is None:
            reason = (
                f"speaker {speaker} is not an ESD speaker id (0001-0020) and has no transcript to tell its language"
            )
            unknown.extend({"path": f.rel, "reason": reason} for f in files)
            continue
        digest = hashlib.sha256(
            json.dumps(
                sorted({u: [line.text, line.emotion] for u, line in lines if line is not None}.items()),
                ensure_ascii=False,
            ).encode()
        ).hexdigest()
        settings = {"ingest_version": INGEST_VERSION, "max_shard_bytes": max_shard_bytes, "language": language}
        inputs[speaker] = SpeakerInputs(speaker, language, files, digest, settings)
    return inputs, unknown


# --- reuse ---------------------------------------------------------------------------------------


def _journal_path(out_dir: Path, speaker: str) -> Path:
    return out_dir / STATE_DIR / f"{speaker}.json"


def _adopt_unchanged(out_dir: Path, inputs: dict[str, SpeakerInputs], writer: ShardWriter) -> dict[str, dict]:
    """Hand the shards of every unchanged speaker to the writer; return those speakers' journals."""
    journals = {}
    for speaker, speaker_inputs in inputs.items():
        journal = _reusable_journal(out_dir, speaker_inputs)
        if journal is not None:
            writer.adopt(journal["shards"], {speaker: journal["counts"]})
            journals[speaker] = journal
    return journals


def _reusable_journal(out_dir: Path, inputs: SpeakerInputs) -> dict | None:
    """The journal of an earlier run if it still describes this speaker exactly, else None.

    Sources count as unchanged when path and size match and either the mtime or the sha256 does
    (a fresh extraction of the same archive changes every mtime, not a byte).
    """
    path = _journal_path(out_dir, inputs.speaker)
    try:
        journal = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if (
        journal.get("format") != JOURNAL_FORMAT
        or journal.get("settings") != inputs.settings
        or journal.get("transcript_digest") != inputs.transcript_digest
    ):
        return None
    recorded = journal["files"]
    if set(recorded) != {f.rel for f in inputs.files}:
        return None
    touched = False
    for source in inputs.files:
        size, mtime_ns, sha256 = recorded[source.rel]
        if size != source.size:
            return None
        if mtime_ns != source.mtime_ns:
            if sha256 != file_sha256(source.path):
                return None
            recorded[source.rel] = [size, source.mtime_ns, sha256]
            touched = True
    for entry in journal["shards"]:
        shard = out_dir / entry["path"]
        if not shard.is_file() or shard.stat().st_size != entry["num_bytes"] or file_sha256(shard) != entry["sha256"]:
            return None
    if touched:
        write_atomically(path, json.dumps(journal, ensure_ascii=False).encode())
    return journal


# --- decoding ------------------------------------------------------------------------------------


def _decode(
    todo: list[SpeakerInputs], workers: int | None, progress: Callable[[str], None]
) -> Iterator[tuple[SpeakerInputs, list[Decoded]]]:
    """Decode every file of the speakers to do on all cores; yield each speaker once all its files are in."""
    jobs = [(str(f.path), f.rel) for inputs in todo for f in inputs.files]
    if not jobs:
        return
    if workers is None:
        workers = min(os.cpu_count() or 1, max(1, len(jobs) // MIN_FILES_PER_WORKER))
    meter = _Meter(len(jobs), progress)
    results = map_ordered(decode_source, jobs, workers, on_crash=_crashed)
    try:
        for inputs in todo:
            decoded = []
            for _ in inputs.files:
                decoded.append(next(results))
                meter.step(inputs.speaker)
            yield inputs, decoded
    finally:
        results.close()  # stops the decoder pool at once if the run is interrupted
    meter.finish()


def _crashed(job: tuple[str, str]) -> Decoded:
    return Decoded(job[1], "", 0, reason="crashed the decoder process (the file is likely malformed)")


class _Meter:
    """A progress line every few seconds: files done, rate, time left."""

    def __init__(self, total: int, report: Callable[[str], None], every_seconds: float = 2.0):
        self.total, self.report, self.every_seconds = total, report, every_seconds
        self.done = 0
        self.started = self.last = time.perf_counter()

    def step(self, speaker: str) -> None:
        self.done += 1
        now = time.perf_counter()
        if now - self.last >= self.every_seconds:
            self.last = now
            rate = self.done / (now - self.started)
            left = (self.total - self.done) / rate if rate > 0 else 0.0
            self.report(
                f"decoded {self.done}/{self.total} files ({100 * self.done / self.total:.0f}%), "
                f"{rate:.0f} files/s, {left:.0f} s left, at speaker {speaker}"
            )

    def finish(self) -> None:
        seconds = time.perf_counter() - self.started
        self.report(f"decoded {self.done} files in {seconds:.1f} s ({self.done / max(seconds, 1e-9):.0f} files/s)")


# --- one speaker's shards and journal ------------------------------------------------------------


def _write_speaker(
    writer: ShardWriter,
    inputs: SpeakerInputs,
    decoded: list[Decoded],
    transcripts: dict[str, TranscriptLine],
    out_dir: Path,
) -> dict:
    """Add a speaker's good clips to the writer, flush its shards, and journal them."""
    journal = {
        "format": JOURNAL_FORMAT,
        "speaker": inputs.speaker,
        "settings": inputs.settings,
        "transcript_digest": inputs.transcript_digest,
        "files": {f.rel: [f.size, f.mtime_ns, r.sha256] for f, r in zip(inputs.files, decoded)},
        "shards": [],
        "counts": {},
        "utterances": {},
        "skipped": [],
        "label_disagreements": [],
        "missing_transcripts": [],
    }
    kept: dict[str, Decoded] = {}
    for source, result in zip(inputs.files, decoded):
        reason = (
            result.reason
            or _duplicate_reason(kept.get(source.utterance_id), result)
            or _add_clip(writer, inputs, source, result, transcripts.get(source.utterance_id), journal)
        )
        if reason:
            journal["skipped"].append({"path": source.rel, "reason": reason})
        else:
            kept[source.utterance_id] = result
    if journal["utterances"]:
        journal["shards"] = writer.flush_speaker(inputs.speaker)
    write_atomically(_journal_path(out_dir, inputs.speaker), json.dumps(journal, ensure_ascii=False).encode())
    return journal


def _add_clip(
    writer: ShardWriter,
    inputs: SpeakerInputs,
    source: SourceFile,
    result: Decoded,
    line: TranscriptLine | None,
    journal: dict,
) -> str | None:
    """Add one decoded clip to the writer and its records to the journal; or say why it cannot be."""
    emotion, label_from, disagreement = _label(source, line)
    if emotion is None:
        return NO_LABEL
    if disagreement:
        journal["label_disagreements"].append(disagreement)
    if line is None:
        journal["missing_transcripts"].append(source.utterance_id)
    split = source.folder_split or id_split(source.number)
    writer.add(
        Clip(
            source.utterance_id,
            inputs.speaker,
            inputs.language,
            emotion,
            split,
            line.text if line else "",
            result.audio,
        )
    )
    journal["utterances"][source.utterance_id] = _utterance_record(source, result, emotion, split, label_from)
    journal["counts"][emotion] = journal["counts"].get(emotion, 0) + 1
    return None


def _duplicate_reason(kept: Decoded | None, result: Decoded) -> str | None:
    if kept is None:
        return None
    same = "same content" if kept.sha256 == result.sha256 else "different content"
    return f"duplicate of {kept.rel} ({same}); the first good copy is kept"


def _label(source: SourceFile, line: TranscriptLine | None) -> tuple[str | None, str | None, dict | None]:
    """The label (the folder's, else the transcript's, else the utterance number's) and any disagreement."""
    in_esd_numbering = 1 <= source.number <= MAX_ESD_NUMBER
    votes = {
        "folder": source.folder_emotion,
        "transcript": line.emotion if line else None,
        "utterance_number": id_block_emotion(source.number) if in_esd_numbering else None,
    }
    named = {k: v for k, v in votes.items() if v is not None}
    if not named:
        return None, None, None
    label_from = next(iter(named))
    disagreement = None
    if len(set(named.values())) > 1:
        disagreement = {"utterance_id": source.utterance_id, "path": source.rel, "label": named[label_from], **named}
    return named[label_from], label_from, disagreement


def _utterance_record(source: SourceFile, result: Decoded, emotion: str, split: str, label_from: str) -> dict:
    record = {
        "speaker": source.speaker,
        "path": source.rel,
        "sha256": result.sha256,
        "num_samples": len(result.audio),
        "seconds": round(len(result.audio) / SAMPLE_RATE, 4),
        "emotion": emotion,
        "label_from": label_from,
        "split": split,
    }
    if (result.source_rate, result.source_channels) != (SAMPLE_RATE, 1):
        record["converted_from"] = {"sample_rate": result.source_rate, "channels": result.source_channels}
    return record


# --- the manifest and the data directory ---------------------------------------------------------


def _esd_manifest_section(
    scan: TreeScan,
    journals: dict[str, dict],
    transcript_report: list[dict],
    info_file: str | None,
    unknown_language: list[dict],
) -> dict:
    speakers = sorted(journals)
    utterances = {u: r for s in speakers for u, r in journals[s]["utterances"].items()}
    skipped = scan.skipped + unknown_language + [x for s in speakers for x in journals[s]["skipped"]]
    split_folders = sum(1 for files in scan.sources.values() for f in files if f.folder_split)
    return {
        "source": {
            "kind": "esd",
            "root": str(scan.root),
            "ingest_version": INGEST_VERSION,
            "num_source_files": sum(len(files) for files in scan.sources.values()),
            "num_in_split_folders": split_folders,
            "num_ignored_files": scan.num_ignored,
            "speaker_info_file": info_file,
        },
        "utterances": dict(sorted(utterances.items())),
        "skipped": sorted(skipped, key=lambda x: x["path"]),
        "label_disagreements": [d for s in speakers for d in journals[s]["label_disagreements"]],
        "missing_transcripts": [u for s in speakers for u in journals[s]["missing_transcripts"]],
        "transcripts": transcript_report,
    }


def _refuse_foreign_corpus(out_dir: Path) -> None:
    if (out_dir / MANIFEST_NAME).exists():
        kind = read_manifest(out_dir).get("source", {}).get("kind")
        if kind != "esd":
            raise FileExistsError(f"{out_dir} already holds a {kind or 'non-ESD'} corpus; choose another --out")


@contextmanager
def _exclusive(out_dir: Path):
    """One ingest per output folder at a time."""
    with open(out_dir / STATE_DIR / "lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another ingest is writing to {out_dir}; wait for it to finish") from None
        yield


def _remove_temp_files(out_dir: Path) -> None:
    """Half-written shards of a killed run: never visible to readers, removed here."""
    for folder in (out_dir, out_dir / SHARD_DIR, out_dir / STATE_DIR):
        if folder.is_dir():
            for path in folder.iterdir():
                if TEMP_FILE.match(path.name):
                    path.unlink(missing_ok=True)


def _remove_unreferenced(out_dir: Path, manifest: dict, speakers: set[str]) -> None:
    """After the new manifest is in place: shards it does not name, journals of vanished speakers."""
    referenced = {Path(e["path"]).name for e in manifest["shards"]}
    for path in (out_dir / SHARD_DIR).iterdir():
        if SHARD_FILE.match(path.name) and path.name not in referenced:
            path.unlink(missing_ok=True)
    for path in (out_dir / STATE_DIR).glob("*.json"):
        if path.stem not in speakers:
            path.unlink(missing_ok=True)
