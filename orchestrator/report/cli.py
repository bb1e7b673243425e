"""`python -m orchestrator.report`: find the sweep(s), write the report's files, log them to the parent run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator import paths, results, tracking
from orchestrator.document import Document, to_html, to_markdown
from orchestrator.report.cells import slug, status_summary
from orchestrator.report.comparison import comparison_report, comparison_table
from orchestrator.report.contents import build_report
from orchestrator.results import StoreError, SweepResults
from workers.vocabulary import Key

ARTIFACT_DIR = Key.REPORT_DIR


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.report",
        description="Write a sweep's report (Markdown + HTML: the paper's tables, confusion matrices, "
        "transfer and fold plots, knob plots) and log it to the sweep's parent MLflow run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "sweeps_or_runs",
        nargs="+",
        metavar="SWEEP_OR_RUN",
        help="a sweep name (its latest parent run) or a run id (a parent, or a trial: its parent); several: "
        "compare their best configurations (sweeps on the same data only)",
    )
    parser.add_argument("--tracking-uri", default=None, help=paths.TRACKING_URI_HELP)
    parser.add_argument("--experiment", default=None, help="MLflow experiment; default: the sweep name")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="report directory; default: ./reports/<sweep>-<parent run id[:8]> (several: ./reports/compare-<sweeps>)",
    )
    parser.add_argument("--no-log", action="store_true", help="write the files only; do not log them to the parent run")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    tracking_uri = args.tracking_uri or paths.default_tracking_uri()
    try:
        client = results.connect(tracking_uri)
    except StoreError as error:  # no store there, or it does not answer
        print(f"report: {error}", file=sys.stderr)
        return 1
    try:
        parents = [results.find_parent(client, ref, args.experiment) for ref in args.sweeps_or_runs]
    except StoreError as error:  # a SWEEP_OR_RUN names nothing in the store: a usage error
        parser.error(str(error))
    try:
        sweeps = [results.load_sweep(client, parent) for parent in parents]
    except StoreError as error:
        print(f"report: {error}", file=sys.stderr)
        return 1
    if len(sweeps) > 1:
        return compare_main(sweeps, args.out)
    return report_main(client, sweeps[0], args.out, log=not args.no_log)


def report_main(client, sweep: SweepResults, out: Path | None, log: bool) -> int:
    """One sweep's report into `out` (default ./reports/<sweep>-<run id[:8]>), logged to its parent when `log`."""
    if not sweep.trials:
        print(
            f"report: run {sweep.parent_id} (sweep {sweep.name}, {sweep.parent_status}) has no trial runs; "
            "nothing to report",
            file=sys.stderr,
        )
        return 1
    out_dir = (out or Path.cwd() / "reports" / f"{sweep.name}-{sweep.parent_id[:8]}").resolve()
    print(
        f"report: sweep {sweep.name}, parent run {sweep.parent_id}, {len(sweep.trials)} trial run(s) "
        f"({status_summary(sweep)})",
        file=sys.stderr,
    )
    try:
        written = write_report(client, sweep, out_dir)
        if log:
            log_report(client, sweep.parent_id, out_dir, written)
    except StoreError as error:
        print(f"report: {error}", file=sys.stderr)
        return 1
    print(f"wrote {out_dir / 'report.html'}")
    print(f"wrote {out_dir / 'report.md'} (images in {out_dir / 'images'})")
    if log:
        print(f"logged to parent run {sweep.parent_id} as artifacts {ARTIFACT_DIR}/")
    return 0


def write_report(client, sweep: SweepResults, out_dir: Path) -> list[str]:
    """Write report.md, report.html and the images; returns what was written, relative to out_dir."""
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    document = build_report(client, sweep, out_dir)
    (out_dir / "report.md").write_text(to_markdown(document))
    (out_dir / "report.html").write_text(to_html(document, out_dir))
    return ["report.md", "report.html", *document.images()]


def log_report(client, parent_id: str, out_dir: Path, files: list[str]) -> None:
    """Log exactly the report's files (never the whole directory: --out may hold anything, even the store)."""
    try:
        tracking.log_files(client, parent_id, out_dir, files, ARTIFACT_DIR)
    except Exception as error:  # e.g. a read-only artifact store
        raise StoreError(
            f"wrote the report but could not log it to run {parent_id}: "
            f"{str(error).strip().splitlines()[0][:200]} (use --no-log to skip)"
        ) from None


def compare_main(sweeps: list[SweepResults], out: Path | None) -> int:
    """The comparison of several sweeps: printed, and written to `out` (logged to no run: it is no one sweep's)."""
    try:
        rows = results.compare_sweeps(sweeps)
    except results.DataMismatch as error:
        print(f"report: cannot compare: {error}", file=sys.stderr)
        return 1
    names = "-".join(slug(s.name) for s in sweeps)
    out_dir = (out or Path.cwd() / "reports" / f"compare-{names}").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    document = comparison_report(rows)
    (out_dir / "report.md").write_text(to_markdown(document))
    (out_dir / "report.html").write_text(to_html(document, out_dir))
    print(to_markdown(Document("", [comparison_table(rows)])).strip())
    print(f"wrote {out_dir / 'report.html'}")
    print(f"wrote {out_dir / 'report.md'}")
    return 0
