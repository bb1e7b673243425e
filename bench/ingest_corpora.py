"""Ingest throughput of every format, side by side with ESD's, in one run (prints numbers, asserts nothing).

    python -m bench --only ingest --ingest-clips 400 --ingest-seconds 2.0
    python bench/ingest_corpora.py --clips 400 --seconds 2.0 --workers 2

Each format gets a generated tree in its release's layout (fixtures/*_tree.py) of about the same
number of clips of the same length (RAVDESS at its 48 kHz, so it pays for resampling), ingested once
from scratch. Clips/s counts kept clips over the whole ingest (scan, decode, write, manifest, plans);
the ratio to ESD's figure is what survives a loaded machine.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import fixtures.corpus_tree
from fixtures.cremad_tree import write_cremad_tree
from fixtures.emodb_tree import write_emodb_tree
from fixtures.esd_tree import write_esd_tree
from fixtures.iemocap_tree import write_iemocap_tree
from fixtures.msp_podcast_tree import write_msp_podcast_tree
from fixtures.ravdess_tree import write_ravdess_tree
from fixtures.table_tree import LABEL_MAP, write_table_tree
from shards.corpora import RELEASES
from shards.corpus import ingest_corpus
from shards.esd import ingest_esd
from shards.table import parse_label_map, scan_table


def _write_esd(work: Path, clips: int) -> Callable[[int], dict]:
    speakers = ["0011", "0012", "0013", "0014"]
    write_esd_tree(work / "tree", speakers, max(1, clips // 20), split_folders=False, seconds=_seconds())
    return lambda workers: ingest_esd(work / "tree", work / "out", workers=workers).manifest


def _write_table(work: Path, clips: int) -> Callable[[int], dict]:
    tree, table = write_table_tree(work / "tree", per_speaker=max(1, clips // 4))

    def ingest(workers: int) -> dict:
        scan = scan_table(table, tree.root, parse_label_map(LABEL_MAP), drop_unmapped=True)
        return ingest_corpus(scan, work / "out", workers=workers).manifest

    return ingest


def _release(name: str, write: Callable[[Path, int], object]) -> Callable[[Path, int], Callable[[int], dict]]:
    def prepare(work: Path, clips: int) -> Callable[[int], dict]:
        write(work / "tree", clips)
        return lambda workers: ingest_corpus(RELEASES[name].scan(work / "tree"), work / "out", workers=workers).manifest

    return prepare


def _seconds() -> float:
    return fixtures.corpus_tree.CLIP_SECONDS


# format -> writes its tree of about `clips` clips, returns the ingest to time
FORMATS: dict[str, Callable[[Path, int], Callable[[int], dict]]] = {
    "esd": _write_esd,
    "table": _write_table,
    "ravdess": _release("ravdess", lambda root, n: write_ravdess_tree(root, (1, 2, 3, 4), min(60, math.ceil(n / 4)))),
    "cremad": _release("cremad", lambda root, n: write_cremad_tree(root, (1001, 1002, 1003, 1004), min(66, n // 4))),
    "emodb": _release("emodb", lambda root, n: write_emodb_tree(root, ("03", "08", "09", "10"), min(69, n // 4))),
    "iemocap": _release("iemocap", lambda root, n: write_iemocap_tree(root, (1, 2), max(1, n // 20))),
    "msp_podcast": _release("msp_podcast", lambda root, n: write_msp_podcast_tree(root, max(1, n // 6))),
}


def ingest_throughput(args) -> None:
    """The `ingest` figure of `python -m bench`."""
    clips = getattr(args, "ingest_clips", 240)
    seconds = getattr(args, "ingest_seconds", 1.0)
    workers = getattr(args, "ingest_workers", None) or min(2, os.cpu_count() or 1)
    fixtures.corpus_tree.CLIP_SECONDS = seconds
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-warmup-") as scratch:  # imports, first soxr call
        FORMATS["esd"](Path(scratch), 20)(1)
    for name, prepare in FORMATS.items():
        with tempfile.TemporaryDirectory(prefix=f"bench-ingest-{name}-") as scratch:
            ingest = prepare(Path(scratch), clips)
            started = time.perf_counter()
            manifest = ingest(workers)
            elapsed = time.perf_counter() - started
        rows.append((name, manifest["num_clips"], elapsed, manifest["total_seconds"]))
    print(f"ingest throughput: ~{clips} clips of {seconds} s per format, workers={workers} (tree writing excluded)")
    esd_rate = None
    print(f"{'format':12s}{'clips':>7s}{'seconds':>9s}{'clips/s':>9s}{'audio s/s':>11s}{'vs ESD':>8s}")
    for name, num_clips, elapsed, audio_seconds in rows:
        rate = num_clips / elapsed
        esd_rate = esd_rate or rate
        print(f"{name:12s}{num_clips:7d}{elapsed:9.2f}{rate:9.0f}{audio_seconds / elapsed:11.0f}{rate / esd_rate:8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=240, dest="ingest_clips")
    parser.add_argument("--seconds", type=float, default=1.0, dest="ingest_seconds")
    parser.add_argument("--workers", type=int, default=None, dest="ingest_workers")
    ingest_throughput(parser.parse_args())


if __name__ == "__main__":
    main()
