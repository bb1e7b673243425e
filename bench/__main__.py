"""Print the four figures of the recipe benchmark, each measured side by side in this run.

    python -m bench                 # all figures (a few minutes on 2 CPU cores)
    python -m bench --only loader padding
    python -m bench --device cuda   # step time and FLOP utilisation on a GPU
    python -m bench gpu --out DIR   # the H200 run: bench/gpu.py (JSON + table); --dry-run on the CPU
    python -m bench encoders        # encoder families, LoRA vs full, Whisper own length vs 30 s (bench/encoders.py)
    python -m bench peer            # this project vs HF Trainer + Ray Tune on the same sweep (bench/peer.py)
    python -m bench profile         # where one smoke trial's time goes (bench/profile_trial.py)
    python -m bench faults          # interrupt, kill and corruption injected into real sweeps: bench/faults.py
    python -m bench scale           # paper-size encoders on the CPU: parameters, step, peak memory (bench/scale.py)
    python -m bench frontend        # epoch time without and with the frozen front end's cache (bench/frontend.py)
    python -m bench schedulers      # best val accuracy per trial-hour: PBT vs ASHA vs grid (bench/schedulers.py)

1. loader: clips/s from memory-mapped shards vs decoding the same clips from WAV files, against
   the in-memory ceiling, and against what one trial consumes; with each training augmentation on
   (speed perturbation, coloured noise, noise from a shard corpus, gain) and the time each adds a clip.
2. padding: padded-frame fraction with and without length bucketing, on ESD length statistics.
3. step: step time and model FLOP utilisation of an XLSR-53-sized encoder built from config.
4. sweep: wall time of a sweep's trials with and without the frozen-stage feature cache.
5. acoustic: openSMILE functionals extracted per second (clips/s), one process against every core.
6. integrity: what checking shards against their manifest costs (first open hashes; later opens stat),
   measured on a few hundred MB and extrapolated to an ESD-sized corpus.

    python -m bench --only integrity
7. ingest: ingest throughput (clips/s) of every corpus format (table, RAVDESS, CREMA-D, EmoDB,
   IEMOCAP, MSP-Podcast) beside ESD's, on generated trees in each release's layout.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from bench import acoustic, figures
from bench.ingest_corpora import ingest_throughput

# Benchmarks with flags of their own: `python -m bench NAME --help`.
SUBCOMMANDS = {
    "gpu": "bench.gpu",
    "encoders": "bench.encoders",
    "peer": "bench.peer",
    "profile": "bench.profile_trial",
    "faults": "bench.faults",
    "scale": "bench.scale",
    "frontend": "bench.frontend",
    "schedulers": "bench.schedulers",
}

FIGURES = {
    "loader": figures.loader_throughput,
    "padding": figures.padding_fraction,
    "step": figures.step_time,
    "sweep": figures.frozen_cache_sweep,
    "acoustic": acoustic.extraction_speed,
    "integrity": figures.shard_integrity,
    "ingest": ingest_throughput,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in SUBCOMMANDS:
        # Imported on demand: bench.gpu imports no Ray or MLflow (the device image has neither).
        return importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", choices=list(FIGURES), default=list(FIGURES), help="figures to measure")
    parser.add_argument("--device", default="auto", help="'cpu', 'cuda' or 'auto' (cuda when available)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's dense peak (bf16 on GPU) for utilisation; default: 790 for H200, measured matmul on CPU",
    )
    parser.add_argument("--integrity-mb", type=int, default=256, help="MB of shards the integrity figure hashes")
    parser.add_argument("--ingest-clips", type=int, default=240, help="ingest: about this many clips per format")
    parser.add_argument("--ingest-seconds", type=float, default=1.0, help="ingest: length of every clip")
    parser.add_argument("--ingest-workers", type=int, default=None, help="ingest: decoder processes (default 2)")
    args = parser.parse_args(argv)
    for name in args.only:
        print(f"\n== {name} ==", flush=True)
        FIGURES[name](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
