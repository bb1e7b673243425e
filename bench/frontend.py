"""Per-epoch time of an `all_but_cnn` stage without and with the frozen front end's cache, side by side in one run.

    python -m bench frontend                         # the tiny wav2vec2 and a bench-size one, 2 epochs each
    python -m bench frontend --epochs 3 --only bench

For each encoder, trials on the demo corpus (4 training speakers by default, batch 8, val every 15 steps),
one after the other: without the cache (`cache_frontend=False`), with a cold cache (the sweep's first trial:
its first epoch includes computing the cache), and with the cache warm (every later trial of the sweep, and
later sweeps); then `--repeat - 1` more pairs without / warm. The figure is the best epoch time after each
trial's first (steady state); the cold trial's cache build (the cache phase) is shown apart.
Sizes: the tiny encoder (width 64, 4 conv layers x 32 channels, 10 ms frames) and the wav2vec2 family's bench
config (width 256, 4 layers, 7 conv layers x 128 channels, 20 ms frames as XLSR-53's). CPU timings under load
are distorted: read the ratios.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

ENCODERS = ("tiny", "bench")


class EpochClock:
    """A reporter noting when each epoch's report arrives."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def report(self, metrics, checkpoint_dir=None) -> None:
        self.times.append(time.perf_counter())


class PhaseClock:
    """Seconds spent in the front-end cache phase (workers/core/phases.py)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def enter(self, name, info) -> None:
        if name == "frontend_cache":
            self._started = time.perf_counter()

    def exit(self, name, info) -> None:
        if name == "frontend_cache":
            self.seconds += time.perf_counter() - self._started


def bench_start(directory: Path) -> str:
    """The wav2vec2 family's bench config with random weights, saved as a local start."""
    from workers.finetune import encoders
    from workers.finetune.model import build_encoder

    torch.manual_seed(0)
    build_encoder(encoders.family_named("wav2vec2").bench_config()).save_pretrained(directory)
    return str(directory)


def one_trial(
    data_dir: Path, start: str, cache: bool, cache_dir: Path, epochs: int, speakers: int
) -> tuple[list[float], float, str]:
    """Epoch durations of one stage, seconds in the cache phase, and the cache's tag."""
    from workers.core.phases import Phase, observe
    from workers.core.tracking import NullLogger
    from workers.finetune.config import TrialConfig
    from workers.finetune.recipe import setup, train_stage

    class Tags(NullLogger):
        tags: dict = {}

        def set_tags(self, tags):
            self.tags.update(tags)

    cfg = TrialConfig(
        data_dir=str(data_dir),
        start=start,
        train_speakers=("0011", "0012", "0013", "0014")[:speakers],
        eval_sets={"test_en": ("0015",)},
        stages=({"trainable": "all_but_cnn", "epochs": epochs, "learning_rate": 1e-3, "batch_size": 8},),
        eval_every_steps=15,
        cache_frontend=cache,
        feature_cache_dir=str(cache_dir),
        checkpoint_on_best=False,
    )
    logger, clock, phases = Tags(), EpochClock(), PhaseClock()
    with observe(phases, expect=(Phase.FRONTEND_CACHE,) if cache else ()):
        trial = setup(cfg, logger, torch.device("cpu"), None)
        started = time.perf_counter()
        train_stage(trial, clock)  # reports every epoch's end but the last (the trial's final report does)
    ends = [started, *clock.times, time.perf_counter()]
    return [b - a for a, b in zip(ends, ends[1:])], phases.seconds, logger.tags.get("frontend_cache/stage0", "")


def main(argv: list[str] | None = None) -> int:
    from orchestrator.paths import ensure_demo_corpus

    parser = argparse.ArgumentParser(prog="python -m bench frontend", description=__doc__)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trial (the first is set apart)")
    parser.add_argument("--repeat", type=int, default=2, help="trials without and with the warm cache, alternated")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--speakers", type=int, default=4, choices=(1, 2, 3, 4), help="training speakers")
    parser.add_argument("--only", nargs="+", choices=ENCODERS, default=list(ENCODERS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data_dir = ensure_demo_corpus(0, log=lambda *_: None)
    print(
        f"all_but_cnn, demo corpus, {args.speakers} speaker(s), batch 8, {args.epochs} epochs a trial, "
        f"{args.threads} thread(s)"
    )
    print(f"{'encoder':8s} {'trial':24s} {'epoch 1 s':>10s} {'later epochs s':>15s} {'cache phase s':>14s}  cache")
    order = [("without cache", False), ("cache cold (1st trial)", True), ("cache warm", True)]
    order += [("without cache", False), ("cache warm", True)] * (args.repeat - 1)
    with tempfile.TemporaryDirectory(prefix="bench-frontend-") as scratch:
        for name in args.only:
            start = "tiny" if name == "tiny" else bench_start(Path(scratch) / "bench-start")
            cache_dir = Path(scratch) / f"cache-{name}"
            later: dict[str, list[float]] = {}
            for label, cache in order:
                epochs, in_cache, tag = one_trial(data_dir, start, cache, cache_dir, args.epochs, args.speakers)
                later.setdefault(label, []).extend(epochs[1:])
                mean = sum(epochs[1:]) / max(len(epochs) - 1, 1)
                print(f"{name:8s} {label:24s} {epochs[0]:10.2f} {mean:15.2f} {in_cache:14.2f}  {tag}", flush=True)
            without, warm = min(later["without cache"]), min(later["cache warm"])
            print(
                f"{name:8s} best later epoch: {without:.2f} s without, {warm:.2f} s with the cache warm: "
                f"{without / warm:.2f}x faster ({warm / without:.2f}x the time)",
                flush=True,
            )
    return 0
