"""Bring your own data: a CSV or JSONL table of audio files with label and speaker.

Columns `path, label, speaker` are required; `language, split, transcript, gender` optional, and
`arousal, valence, dominance` (numbers; the manifest declares each column that has a value, with the
range the table uses as its scale; an empty cell is a clip without that value).
`path` is relative to the audio root (or absolute). Every row that cannot be used is named with
its line number and reason and skipped; the rest is ingested (shards.corpus).

Labels: without a label map, the corpus's label set is every label the table uses, sorted. A label
map (`parse_label_map("neu,ang,sad,hap,exc=hap")`) declares the label set in its order and maps or
merges source labels onto it; a row whose label the map does not name is refused (the whole
ingest stops and lists them) unless `drop_unmapped`, which skips each such row and counts it.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

from shards.corpus import NO_SPLIT, CorpusScan, Entry, normalize_gender
from shards.schema import DIMENSIONS, language_code

REQUIRED_COLUMNS = ("path", "label", "speaker")
OPTIONAL_COLUMNS = ("language", "split", "transcript", "gender")


class UnmappedLabelsError(ValueError):
    """The table uses labels the label map does not name, and dropping them was not asked for."""


def parse_label_map(spec: str) -> dict[str, str]:
    """'neu,ang,sad,hap,exc=hap' -> {'neu': 'neu', ..., 'exc': 'hap'}; targets keep their first-seen order."""
    mapping: dict[str, str] = {}
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        source, _, target = item.partition("=")
        source, target = source.strip(), (target or source).strip()
        if not source or not target:
            raise ValueError(f"bad label map item {item!r}: write LABEL or SOURCE=TARGET")
        if source in mapping and mapping[source] != target:
            raise ValueError(f"label {source!r} is mapped twice ({mapping[source]!r} and {target!r})")
        mapping[source] = target
    if not mapping:
        raise ValueError("an empty label map")
    return mapping


def label_set(mapping: dict[str, str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(mapping.values()))


def read_rows(table: Path) -> list[tuple[int, dict]]:
    """(line number, row) for every data row of a CSV (header on line 1) or JSONL file."""
    text = table.read_text(encoding="utf-8-sig")
    if table.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as error:
                rows.append((number, {"__error__": f"not valid JSON: {error.msg}"}))
                continue
            rows.append((number, value if isinstance(value, dict) else {"__error__": "not a JSON object"}))
        return rows
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{table}: no column(s) {', '.join(missing)}; the header is {reader.fieldnames}")
    return [(reader.line_num, row) for row in reader]


def scan_table(
    table: str | Path,
    audio_root: str | Path,
    label_map: dict[str, str] | None = None,
    drop_unmapped: bool = False,
    default_language: str = "und",
) -> CorpusScan:
    """Every usable row as an Entry, every other row named; raises UnmappedLabelsError (see module doc)."""
    table, audio_root = Path(table).resolve(), Path(audio_root).resolve()
    rows = read_rows(table)
    unmapped = Counter(
        str(row.get("label") or "").strip()
        for _, row in rows
        if label_map is not None and str(row.get("label") or "").strip() not in label_map
    )
    unmapped.pop("", None)  # an empty label is a bad row, not an unmapped one
    if unmapped and not drop_unmapped:
        listed = ", ".join(f"{label!r} ({n} rows)" for label, n in unmapped.most_common())
        raise UnmappedLabelsError(
            f"labels not in --labels: {listed}; map them (SOURCE=TARGET) or pass --drop-unmapped to skip those rows"
        )
    entries: list[Entry] = []
    skipped: list[dict] = []
    first_line_of: dict[str, int] = {}
    for number, row in rows:
        entry_or_reason = _entry(number, row, audio_root, label_map, default_language, first_line_of)
        if isinstance(entry_or_reason, Entry):
            entries.append(entry_or_reason)
            first_line_of.setdefault(entry_or_reason.rel, number)
        else:
            skipped.append({"line": number, "path": str(row.get("path") or ""), "reason": entry_or_reason})
    labels = label_set(label_map) if label_map is not None else tuple(sorted({e.label for e in entries}))
    dimensions = {
        d: [
            min(e.dimensions[d] for e in entries if d in e.dimensions),
            max(e.dimensions[d] for e in entries if d in e.dimensions),
        ]
        for d in DIMENSIONS
        if any(d in e.dimensions for e in entries)
    }
    notes = {"table": str(table), "audio_root": str(audio_root), "num_rows": len(rows)}
    if label_map is not None:
        notes["label_map"] = label_map
        notes["dropped_unmapped"] = dict(unmapped)
    has_splits = any(e.split != NO_SPLIT for e in entries)
    return CorpusScan(
        "table", table, labels, entries, skipped, official_splits=has_splits, notes=notes, dimensions=dimensions
    )


def _entry(
    number: int,
    row: dict,
    audio_root: Path,
    label_map: dict[str, str] | None,
    default_language: str,
    first_line_of: dict[str, int],
) -> Entry | str:
    """The row as an Entry, or why it cannot be one."""
    if "__error__" in row:
        return row["__error__"]
    values = {k: str(row.get(k) or "").strip() for k in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)}
    if not values["path"]:
        return "empty path"
    if not values["speaker"]:
        return "empty speaker"
    if not values["label"]:
        return "empty label"
    label = values["label"]
    if label_map is not None:
        if label not in label_map:
            return f"unknown label {label!r}: not in --labels (dropped, --drop-unmapped)"
        label = label_map[label]
    language = language_code(values["language"] or default_language)
    if language is None:
        return f"language {values['language']!r} is not an ISO 639 code"
    path = Path(values["path"])
    path = path if path.is_absolute() else audio_root / path
    if not path.is_file():
        return f"missing file: {path} does not exist" if not path.exists() else f"not a file: {path}"
    rel = path.relative_to(audio_root).as_posix() if path.is_relative_to(audio_root) else str(path)
    if rel in first_line_of:
        return f"duplicate of line {first_line_of[rel]} (same file)"
    dimensions = {}
    for name in DIMENSIONS:
        text = str(row.get(name) if row.get(name) is not None else "").strip()
        if not text:
            continue
        try:
            dimensions[name] = float(text)
        except ValueError:
            return f"{name} {text!r} is not a number"
    return Entry(
        origin=f"line {number}",
        path=path,
        rel=rel,
        utterance_id=rel.rsplit(".", 1)[0] if "." in Path(rel).name else rel,
        label=label,
        speaker=values["speaker"],
        language=language,
        split=values["split"].lower() or NO_SPLIT,
        transcript=values["transcript"],
        gender=normalize_gender(values["gender"]),
        dimensions=dimensions,
    )
