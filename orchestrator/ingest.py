"""Turn a raw corpus into shards once, offline; check a shard directory against its manifest.

    python -m orchestrator.ingest esd PATH --out DATA_DIR          # ESD, any copy in circulation
    python -m orchestrator.ingest esd PATH --out DATA_DIR --verify # ... then re-read every shard
    python -m orchestrator.ingest verify DATA_DIR                  # check an existing directory
    python -m orchestrator.ingest table FILE.csv --audio-root DIR --out DATA_DIR   # any labelled table
    python -m orchestrator.ingest ravdess PATH --out DATA_DIR      # a named release (`list` names them)
    python -m orchestrator.ingest list

Progress goes to stderr, the summary to stdout (`--json` for a machine-readable one).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from shards.corpora import RELEASES
from shards.writer import manifest_labels

MAX_LISTED_PER_REASON = 5


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.ingest",
        description="Ingest a raw emotion corpus into Arrow shards + manifest.json + splits.json, "
        "or verify a shard directory.",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{esd,table,list,verify," + ",".join(RELEASES) + "}"
    )
    esd = commands.add_parser(
        "esd",
        help="ingest an ESD download (Zhou et al. 2022)",
        description="Ingest an ESD download. Accepts SSSS/<Emotion>/[train|evaluation|test/]SSSS_NNNNNN.wav at "
        "any depth (e.g. under 'Emotion Speech Dataset/'), SSSS/SSSS.txt transcripts in any "
        "common encoding. Bad files are skipped and listed, never fatal. Re-running reuses every "
        "speaker whose sources are unchanged.",
    )
    esd.add_argument("path", type=Path, help="the folder ESD was extracted into")
    _output_options(esd)
    table = commands.add_parser(
        "table",
        help="ingest any table of labelled audio files (CSV or JSONL)",
        description="Columns path, label, speaker (required) and language, split, transcript, gender (optional). "
        "Every bad row (missing file, unknown label, empty speaker, undecodable audio) is skipped and named "
        "with its line number. Re-running reuses every speaker whose rows and files are unchanged.",
    )
    table.add_argument("table", type=Path, help="FILE.csv (header on line 1) or FILE.jsonl (one object a line)")
    table.add_argument("--audio-root", type=Path, required=True, help="the folder the table's paths are relative to")
    table.add_argument(
        "--labels",
        default=None,
        help="the label set, in order, with optional merges: 'neu,ang,sad,hap,exc=hap'. Without it every label "
        "in the table is a class (sorted). Rows with labels it does not name stop the ingest unless --drop-unmapped",
    )
    table.add_argument(
        "--drop-unmapped", action="store_true", help="skip (and count) rows whose label --labels does not name"
    )
    table.add_argument(
        "--language", default="und", help="ISO 639 code for rows without a language column (default: und)"
    )
    _output_options(table)
    for release in RELEASES.values():
        named = commands.add_parser(
            release.name, help=f"ingest {release.title}", description=f"{release.title}. {release.conventions}."
        )
        named.add_argument("path", type=Path, help=f"the folder {release.name} was extracted into")
        if release.name == "iemocap":
            named.add_argument(
                "--classes", choices=("four", "all"), default="four", help="neu/hap/ang/sad (default) or all nine"
            )
            named.add_argument(
                "--keep-excited", action="store_true", help="keep 'exc' as its own label instead of merging into 'hap'"
            )
            named.add_argument(
                "--skip-overlapping", action="store_true", help="skip turns that overlap the other speaker's turn"
            )
        _output_options(named)
    commands.add_parser("list", help="name the corpora a named ingester reads")
    verify = commands.add_parser(
        "verify",
        help="re-read every shard of a data directory against its manifest",
        description="Check hashes, row counts and every row against the manifest; exit status 1 on any mismatch.",
    )
    verify.add_argument("data", type=Path, help="data directory (holds manifest.json)")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


class UsageError(ValueError):
    """A flag or path argument that cannot work; reported through `parser.error` (status 2)."""


def _output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="data directory to write (pass it to sweeps as --data)")
    parser.add_argument("--verify", action="store_true", help="afterwards, re-read every shard against the manifest")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help=f"decoder processes (default: all {os.cpu_count()} cores, or 1 when there are too few "
        "files to pay for starting processes)",
    )
    parser.add_argument(
        "--max-shard-mb", type=float, default=256.0, help="audio per shard in MiB; bounds the shard size (default: 256)"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "verify":
            return run_verify(args.data, args.json)
        if args.command == "list":
            for release in RELEASES.values():
                print(f"{release.name:12s} {release.title}\n{'':12s} {release.conventions}")
            print(f"{'table':12s} any CSV/JSONL of path,label,speaker[,language,split,transcript,gender]")
            return 0
        if args.command == "esd":
            return run_esd(args)
        return run_corpus(args)
    except UsageError as error:
        parser.error(str(error))


def run_corpus(args: argparse.Namespace) -> int:
    """A table or a named release, through shards.corpus."""
    from shards.corpus import ingest_corpus

    _check_options(args)
    try:
        scan = _scan(args)
        result = ingest_corpus(
            scan,
            args.out,
            workers=args.workers,
            max_shard_bytes=int(args.max_shard_mb * 1024 * 1024),
            progress=_progress,
        )
    except KeyboardInterrupt:
        _progress("interrupted: finished speakers are kept; run the same command again to continue")
        return 130
    except (FileNotFoundError, FileExistsError, RuntimeError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    return _report(args, result)


def _scan(args: argparse.Namespace):
    if args.command == "table":
        from shards.table import parse_label_map, scan_table

        label_map = parse_label_map(args.labels) if args.labels else None
        return scan_table(args.table, args.audio_root, label_map, args.drop_unmapped, args.language)
    if args.command == "iemocap":
        return RELEASES["iemocap"].scan(
            args.path, classes=args.classes, merge_excited=not args.keep_excited, skip_overlapping=args.skip_overlapping
        )
    return RELEASES[args.command].scan(args.path)


def _check_options(args: argparse.Namespace) -> None:
    if (args.workers is not None and args.workers < 1) or args.max_shard_mb <= 0:
        raise UsageError("--workers must be at least 1 and --max-shard-mb positive")


def run_esd(args: argparse.Namespace) -> int:
    from shards.esd import ingest_esd

    _check_options(args)
    try:
        result = ingest_esd(
            args.path,
            args.out,
            workers=args.workers,
            max_shard_bytes=int(args.max_shard_mb * 1024 * 1024),
            progress=_progress,
        )
    except KeyboardInterrupt:
        _progress("interrupted: finished speakers are kept; run the same command again to continue")
        return 130
    except (FileNotFoundError, FileExistsError) as error:  # the folder given, or --out holding another corpus
        raise UsageError(str(error)) from None
    except RuntimeError as error:
        raise SystemExit(f"error: {error}") from None
    return _report(args, result)


def _report(args: argparse.Namespace, result) -> int:
    summary = summarize(result)
    problems = _verify(args.out) if args.verify else []
    if args.json:
        print(
            json.dumps(
                {**summary, **({"verify": _verify_report(args.out, problems)} if args.verify else {})},
                indent=1,
                ensure_ascii=False,
            )
        )
    else:
        print(format_summary(summary))
        if args.verify:
            print(_verify_text(args.out, problems))
    return 1 if problems or not result.manifest["num_clips"] else 0


def run_verify(data_dir: Path, as_json: bool) -> int:
    problems = _verify(data_dir)
    print(json.dumps(_verify_report(data_dir, problems), indent=1) if as_json else _verify_text(data_dir, problems))
    return 1 if problems else 0


def _verify(data_dir: Path) -> list[str]:
    from shards.verify import verify_corpus
    from shards.writer import ManifestError

    try:
        return verify_corpus(data_dir)
    except FileNotFoundError as error:
        raise UsageError(f"{data_dir}: {error}") from None
    except ManifestError as error:
        raise SystemExit(f"error: {error}") from None


def _verify_report(data_dir: Path, problems: list[str]) -> dict:
    return {"data": str(data_dir), "ok": not problems, "problems": problems}


def _verify_text(data_dir: Path, problems: list[str]) -> str:
    if not problems:
        return f"verify: every shard of {data_dir} matches its manifest"
    return "\n".join([f"verify: {len(problems)} problem(s) in {data_dir}:", *(f"  {p}" for p in problems)])


def _progress(line: str) -> None:
    print(f"[ingest] {line}", file=sys.stderr, flush=True)


def summarize(result) -> dict:
    """The numbers a person wants after an ingest, from the manifest and the run."""
    manifest = result.manifest
    utterances = manifest.get("utterances", {})
    seconds_by_speaker: dict[str, float] = {}
    for record in utterances.values():
        seconds_by_speaker[record["speaker"]] = seconds_by_speaker.get(record["speaker"], 0.0) + record["seconds"]
    return {
        "out": str(result.out_dir),
        "kind": manifest.get("source", {}).get("kind", "demo"),
        "labels": list(manifest_labels(manifest)),
        "num_clips": manifest["num_clips"],
        "hours": round(manifest["total_seconds"] / 3600, 3),
        "num_shards": len(manifest["shards"]),
        "speakers": {
            s: {
                **meta,
                "counts": manifest["counts"].get(s, {}),
                "minutes": round(seconds_by_speaker.get(s, 0.0) / 60, 2),
            }
            for s, meta in manifest["speakers"].items()
        },
        "skipped": manifest.get("skipped", []),
        "num_label_disagreements": len(manifest.get("label_disagreements", [])),
        "num_missing_transcripts": len(manifest.get("missing_transcripts", [])),
        "transcript_encodings": {t["path"]: t.get("encoding", t.get("error")) for t in manifest.get("transcripts", [])},
        "reused_speakers": result.reused,
        "processed_speakers": result.processed,
        "num_decoded_files": result.num_decoded_files,
        "decode_seconds": round(result.decode_seconds, 2),
        "files_per_second": round(result.files_per_second, 1),
        "split_plans": "splits.json",
    }


def format_summary(summary: dict) -> str:
    lines = [
        f"ingested {summary['num_clips']} clips, {summary['hours']:.2f} h, {len(summary['speakers'])} speakers, "
        f"{summary['num_shards']} shards -> {summary['out']}",
        "",
    ]
    labels = summary["labels"]
    width = max(9, *(len(label) + 1 for label in labels))
    named = max(8, *(len(s) + 1 for s in summary["speakers"])) if summary["speakers"] else 8
    header = (
        f"{'speaker':{named}s}{'lang':5s}{'gender':8s}"
        + "".join(f"{e:>{width}s}" for e in labels)
        + f"{'clips':>8s}{'min':>8s}"
    )
    lines.append(header)
    for speaker, info in summary["speakers"].items():
        counts = [info["counts"].get(e, 0) for e in labels]
        lines.append(
            f"{speaker:{named}s}{info['language']:5s}{info['gender']:8s}"
            + "".join(f"{n:{width}d}" for n in counts)
            + f"{sum(counts):8d}{info['minutes']:8.1f}"
        )
    lines.append("")
    lines.extend(_skipped_lines(summary["skipped"]))
    if summary["num_label_disagreements"]:
        lines.append(
            f"{summary['num_label_disagreements']} clips whose folder disagrees with the transcript or "
            "utterance number (the folder's label is kept): manifest.json 'label_disagreements'"
        )
    if summary["num_missing_transcripts"]:
        lines.append(
            f"{summary['num_missing_transcripts']} clips without a transcript line (kept, empty text): "
            "manifest.json 'missing_transcripts'"
        )
    if summary["kind"] == "esd":
        encodings = sorted(set(summary["transcript_encodings"].values()))
        lines.append(f"transcripts: {len(summary['transcript_encodings'])} files ({', '.join(encodings) or 'none'})")
    done = (
        f"decoded {summary['num_decoded_files']} files in {summary['decode_seconds']:.1f} s "
        f"({summary['files_per_second']:.0f} files/s)"
        if summary["num_decoded_files"]
        else "nothing to decode"
    )
    lines.append(
        f"speakers reused: {len(summary['reused_speakers'])}, processed: {len(summary['processed_speakers'])}; {done}"
    )
    lines.append(f"split plans: {summary['out']}/{summary['split_plans']}")
    return "\n".join(lines)


def _skipped_lines(skipped: list[dict]) -> list[str]:
    if not skipped:
        return ["skipped: none"]
    by_reason: dict[str, list[str]] = {}
    for entry in skipped:
        # "truncated: the data chunk declares ..." -> "truncated"
        kind = re.split(r"[:(]", entry["reason"], maxsplit=1)[0].strip()
        where = f"line {entry['line']} ({entry['path']})" if "line" in entry else entry["path"]
        by_reason.setdefault(kind, []).append(f"{where}: {entry['reason']}")
    lines = [f"skipped {len(skipped)} files (all listed in manifest.json 'skipped'):"]
    for kind, entries in sorted(by_reason.items()):
        lines.append(f"  {kind}: {len(entries)}")
        lines.extend(f"    {e}" for e in entries[:MAX_LISTED_PER_REASON])
        if len(entries) > MAX_LISTED_PER_REASON:
            lines.append(f"    ... and {len(entries) - MAX_LISTED_PER_REASON} more")
    return lines


if __name__ == "__main__":
    sys.exit(main())
