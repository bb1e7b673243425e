"""Best validation accuracy per trial-hour: PBT vs ASHA vs grid (fifo) on the same trials and budget.

    python -m bench schedulers                     # smoke's 2 learning rates, schedule full, each scheduler
    python -m bench schedulers --preset peer8      # 8 learning rates
    python -m bench schedulers --epoch-scale 1 --train-speakers 0011 0012

Each scheduler runs `python -m orchestrator.sweep smoke` (its own process, a fresh MLflow store) on the
same grid (learning rates 1e-3 and 2e-3, or peer8's 8, schedule full: PBT's population may differ only in
what it mutates), the same epochs per trial (the budget:
grid and PBT spend all of it, ASHA stops weak trials early) and one CPU per trial. Per scheduler, from
its MLflow runs (one per trial under every scheduler): the best validation accuracy any trial reached
(the maximum of every run's `curve/val_accuracy`); from Tune's results (each trial's result.json), the
trial-hours spent running (the sum of every report's `time_this_iter_s`: a trial's set-up, the restarts
PBT's exploits cost, never the time a trial waits paused for a free CPU, which a run's wall time would
count); their quotient, and the sweep's wall time. PBT's exploits are counted from its runs' `pbt/<n>` tags.
The demo corpus is small and synthetic: these figures compare schedulers, they say nothing about emotion.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from workers.vocabulary import Key, Tag

SCHEDULERS = ("fifo", "asha", "pbt")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench schedulers", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--schedulers", nargs="+", choices=SCHEDULERS, default=list(SCHEDULERS))
    parser.add_argument("--epoch-scale", type=float, default=2.0, help="smoke's epoch_scale (2: 4 epochs of full)")
    parser.add_argument("--train-speakers", nargs="+", default=["0011", "0012", "0013", "0014"])
    parser.add_argument("--eval-every-steps", type=int, default=5)
    parser.add_argument("--preset", default=None, help="smoke's preset, e.g. peer8: 8 learning rates (default 2)")
    args = parser.parse_args(argv)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench-schedulers-") as tmp:
        for scheduler in args.schedulers:
            rows[scheduler] = run_one(Path(tmp) / scheduler, scheduler, args)
    print_table(rows, args)
    return 0


def run_one(directory: Path, scheduler: str, args) -> dict:
    directory.mkdir(parents=True)
    tracking_uri = f"sqlite:///{directory / 'mlflow.db'}"
    speakers = "(" + "".join(f"'{s}'," for s in args.train_speakers) + ")"
    command = [sys.executable, "-m", "orchestrator.sweep", "smoke", "--scheduler", scheduler, "--quiet"]
    command += ["--set", "schedule=full", "--set", f"epoch_scale={args.epoch_scale}"]
    command += ["--set", f"train_speakers={speakers}", *(["--preset", args.preset] if args.preset else [])]
    command += ["--set", f"eval_every_steps={args.eval_every_steps}", "--set", "eval_sets={'test_en': ('0015',)}"]
    command += ["--cpus-per-trial", "1", "--storage", str(directory / "ray"), "--tracking-uri", tracking_uri]
    print(f"$ {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=directory)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"the {scheduler} sweep failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return figures(tracking_uri, wall, directory / "ray")


def running_seconds(storage: Path) -> float:
    """Seconds the sweep's trials spent running: every Tune report's time_this_iter_s, every trial."""
    seconds = 0.0
    for results in storage.rglob("result.json"):
        for line in results.read_text().splitlines():
            if line.strip():
                seconds += float(json.loads(line).get("time_this_iter_s") or 0.0)
    return seconds


def figures(tracking_uri: str, wall: float, storage: Path) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("smoke")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.{Tag.TRIAL_ID} != ''")
    best, exploits = 0.0, 0
    for run in runs:
        curve = client.get_metric_history(run.info.run_id, Key.curve(Key.VAL_ACCURACY))
        best = max([best, *(m.value for m in curve)])
        exploits += sum(1 for k in run.data.tags if k.startswith(Key.PBT_PREFIX))
    hours = running_seconds(storage) / 3600
    return {
        "trials": len(runs),
        "best_val_accuracy": best,
        "trial_hours": hours,
        "per_trial_hour": best / hours if hours else float("nan"),
        "sweep_wall": wall,
        "exploits": exploits,
    }


def print_table(rows: dict, args) -> None:
    print(
        f"\n== schedulers: smoke {args.preset or 'lr 1e-3, 2e-3'}, schedule full, epoch_scale {args.epoch_scale}, "
        f"train speakers {' '.join(args.train_speakers)} =="
    )
    print(
        f"  {'':6s} {'runs':>5s} {'best val acc':>12s} {'trial-hours':>12s} {'acc/trial-hour':>15s} {'sweep wall':>11s}"
    )
    for name, row in rows.items():
        extra = f"   ({row['exploits']} exploits)" if name == "pbt" else ""
        print(
            f"  {name:6s} {row['trials']:5d} {row['best_val_accuracy']:12.3f} {row['trial_hours']:12.4f} "
            f"{row['per_trial_hour']:15.1f} {row['sweep_wall']:10.1f}s{extra}"
        )


if __name__ == "__main__":
    sys.exit(main())
