"""Ingest throughput on a generated ESD-shaped tree (not a test: prints numbers, asserts nothing).

    python bench/ingest_esd.py --speakers 20 --clips-per-emotion 30 --seconds 3.0 --workers 2

Writes the tree and the shards under a temporary folder (or --work), ingests it once from scratch
and once more (a re-run that reuses every speaker), and prints clips/s and audio seconds/s.
A share of the clips is written at 22.05 kHz stereo to include the resampling path.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

from fixtures.esd_tree import synth_audio, write_esd_tree
from shards.esd import ingest_esd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speakers", type=int, default=20, help="speakers 0001.. (at most 20)")
    parser.add_argument("--clips-per-emotion", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of every clip (ESD averages ~2.9 s)")
    parser.add_argument("--resampled-fraction", type=float, default=0.1, help="share of clips at 22.05 kHz stereo")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--work", type=Path, default=None, help="folder for the tree and shards (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        speakers = [f"{n:04d}" for n in range(1, args.speakers + 1)]
        started = time.perf_counter()
        clips = write_esd_tree(
            work / "esd", speakers, args.clips_per_emotion, split_folders=False, seconds=args.seconds
        )
        rng = np.random.default_rng(0)
        for clip in rng.choice(clips, int(len(clips) * args.resampled_fraction), replace=False):
            audio = synth_audio(args.seconds, seed=1, rate=22_050)
            soundfile.write(clip.path, np.stack([audio, audio], axis=1), 22_050, subtype="PCM_16")
        print(f"tree: {len(clips)} clips x {args.seconds} s in {time.perf_counter() - started:.1f} s")
        for run in ("first ingest", "re-run"):
            started = time.perf_counter()
            result = ingest_esd(work / "esd", work / "out", workers=args.workers)
            seconds = time.perf_counter() - started
            audio_seconds = result.manifest["total_seconds"]
            print(
                f"{run}: {result.manifest['num_clips']} clips in {seconds:.2f} s = "
                f"{result.manifest['num_clips'] / seconds:.0f} clips/s, {audio_seconds / seconds:.0f} audio s/s "
                f"(workers={args.workers}, processed {len(result.processed)} speakers, reused {len(result.reused)})"
            )


if __name__ == "__main__":
    main()
