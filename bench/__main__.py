"""Print the four figures of the recipe benchmark, each measured side by side in this run.

    python -m bench                 # all figures (a few minutes on 2 CPU cores)
    python -m bench --only loader padding
    python -m bench --device cuda   # step time and FLOP utilisation on a GPU
    python -m bench peer            # this project vs HF Trainer + Ray Tune on the same sweep (bench/peer.py)
    python -m bench profile         # where one smoke trial's time goes (bench/profile_trial.py)

1. loader: clips/s from memory-mapped shards vs decoding the same clips from WAV files, against
   the in-memory ceiling, and against what one trial consumes.
2. padding: padded-frame fraction with and without length bucketing, on ESD length statistics.
3. step: step time and model FLOP utilisation of an XLSR-53-sized encoder built from config.
4. sweep: wall time of a sweep's trials with and without the frozen-stage feature cache.
"""

from __future__ import annotations

import argparse
import sys

from bench import figures

FIGURES = {
    "loader": figures.loader_throughput,
    "padding": figures.padding_fraction,
    "step": figures.step_time,
    "sweep": figures.frozen_cache_sweep,
}
# Commands with their own arguments: `python -m bench NAME --help`.
COMMANDS = {"peer": "bench.peer", "profile": "bench.profile_trial"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMMANDS:
        import importlib

        return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])
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
    args = parser.parse_args(argv)
    for name in args.only:
        print(f"\n== {name} ==", flush=True)
        FIGURES[name](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
