"""Turn a raw corpus into shards once, offline; check a shard directory against its manifest.

    python -m orchestrator.ingest esd PATH --out DATA_DIR          # ESD, any copy in circulation
    python -m orchestrator.ingest esd PATH --out DATA_DIR --verify # ... then re-read every shard
    python -m orchestrator.ingest verify DATA_DIR                  # check an existing directory

Progress goes to stderr, the summary to stdout (`--json` for a machine-readable one).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from shards.schema import EMOTIONS

MAX_LISTED_PER_REASON = 5


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.ingest",
        description="Ingest a raw emotion corpus into Arrow shards + manifest.json + splits.json, "
        "or verify a shard directory.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{esd,verify}")
    esd = commands.add_parser(
        "esd",
        help="ingest an ESD download (Zhou et al. 2022)",
        description="Ingest an ESD download. Accepts SSSS/<Emotion>/[train|evaluation|test/]SSSS_NNNNNN.wav at "
        "any depth (e.g. under 'Emotion Speech Dataset/'), SSSS/SSSS.txt transcripts in any "
        "common encoding. Bad files are skipped and listed, never fatal. Re-running reuses every "
        "speaker whose sources are unchanged.",
    )
    esd.add_argument("path", type=Path, help="the folder ESD was extracted into")
    esd.add_argument("--out", type=Path, required=True, help="data directory to write (pass it to sweeps as --data)")
    esd.add_argument("--verify", action="store_true", help="afterwards, re-read every shard against the manifest")
    esd.add_argument(
        "--workers",
        type=int,
        default=None,
        help=f"decoder processes (default: all {os.cpu_count()} cores, or 1 when there are too few "
        "files to pay for starting processes)",
    )
    esd.add_argument(
        "--max-shard-mb", type=float, default=256.0, help="audio per shard in MiB; bounds the shard size (default: 256)"
    )
    esd.add_argument("--json", action="store_true", help="print the summary as JSON")
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "verify":
            return run_verify(args.data, args.json)
        return run_esd(args)
    except UsageError as error:
        parser.error(str(error))


def run_esd(args: argparse.Namespace) -> int:
    from shards.esd import ingest_esd

    if (args.workers is not None and args.workers < 1) or args.max_shard_mb <= 0:
        raise UsageError("--workers must be at least 1 and --max-shard-mb positive")
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

    try:
        return verify_corpus(data_dir)
    except FileNotFoundError as error:
        raise UsageError(f"{data_dir}: {error}") from None


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
    header = (
        f"{'speaker':8s}{'lang':5s}{'gender':8s}" + "".join(f"{e:>9s}" for e in EMOTIONS) + f"{'clips':>8s}{'min':>8s}"
    )
    lines.append(header)
    for speaker, info in summary["speakers"].items():
        counts = [info["counts"].get(e, 0) for e in EMOTIONS]
        lines.append(
            f"{speaker:8s}{info['language']:5s}{info['gender']:8s}"
            + "".join(f"{n:9d}" for n in counts)
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
        by_reason.setdefault(kind, []).append(f"{entry['path']}: {entry['reason']}")
    lines = [f"skipped {len(skipped)} files (all listed in manifest.json 'skipped'):"]
    for kind, entries in sorted(by_reason.items()):
        lines.append(f"  {kind}: {len(entries)}")
        lines.extend(f"    {e}" for e in entries[:MAX_LISTED_PER_REASON])
        if len(entries) > MAX_LISTED_PER_REASON:
            lines.append(f"    ... and {len(entries) - MAX_LISTED_PER_REASON} more")
    return lines


if __name__ == "__main__":
    sys.exit(main())
