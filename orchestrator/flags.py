"""The driver's command line: `python -m orchestrator.sweep NAME [flags]`, in three groups (what runs,
resources and scheduling, where); `orchestrator.sweep` acts on what they parse to."""

from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator import paths
from orchestrator.record import Resources
from orchestrator.schedulers import add_scheduler_flags

CHAMPION_ALIAS = "champion"  # the registry alias --register points at the best trial's model version


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.sweep",
        description="Run a named sweep (a module of search_spaces/) on Ray Tune, tracked in MLflow.",
        epilog="Resource flags left out take the stored values on --resume, else the defaults shown.",
    )
    parser.add_argument("name", help="sweep name (e.g. smoke), or 'list' to show the named sweeps")
    add_trial_flags(parser.add_argument_group("what runs"))
    add_resource_flags(parser.add_argument_group("resources and scheduling"))
    add_place_flags(parser.add_argument_group("where"))
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the trial grid (trials, differing values, folds, speakers and clips, resources) and exit: "
        "no Ray, no MLflow",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="one line per trial event; a failing trial's traceback only on its MLflow run and in Tune's error file",
    )
    return parser


def add_trial_flags(what) -> None:
    """What the trials run: the sweep's preset, the data, held-out corpora, --set, folds, a start model."""
    what.add_argument("--preset", default=None, help="a preset of the sweep (e.g. 'tiny': tiny model, CPU, minutes)")
    what.add_argument(
        "--data",
        type=Path,
        default=None,
        help="shard directory (from orchestrator.ingest); default: the built-in demo corpus",
    )
    what.add_argument(
        "--eval-data",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="also test every trial on another ingested corpus (repeatable), logged as test_NAME/...; its labels "
        "count as the training corpus's by name (case-insensitive) or --eval-label-map; other clips are left "
        "out and counted (test_NAME/unmapped_clips)",
    )
    what.add_argument(
        "--eval-label-map",
        action="append",
        default=[],
        metavar="SRC=DST[,...]",
        help="labels of the --eval-data corpora -> labels of the training corpus, e.g. angry=ang,happy=hap",
    )
    what.add_argument(
        "--num-samples",
        type=int,
        default=None,
        help="draws of each scenario's random domains, each crossed with its grid; identical configurations run once",
    )
    what.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a trial config value in every trial (repeatable), e.g. --set learning_rate=3e-4; "
        "Hugging Face names work too (--set per_device_train_batch_size=16)",
    )
    what.add_argument(
        "--folds",
        choices=("loso", "emobox"),
        default=None,
        help="run every configuration on each leave-one-speaker-out or EmoBox fold of the sweep's "
        "fold language; mean and std per configuration go on the parent run",
    )
    what.add_argument(
        "--init-from",
        default=None,
        metavar="MODEL",
        help="start from this fine-tuned model: an MLflow run id, runs:/<run id>/model, models:/NAME@alias, "
        "or a saved model directory; transfer_zh then skips training its English base",
    )


def add_resource_flags(how) -> None:
    """What each trial gets (CPUs, GPUs, workers) and how Tune schedules and retries them."""
    how.add_argument(
        "--max-concurrent", type=int, default=None, help="trials running at once (default: as resources allow)"
    )
    how.add_argument(
        "--cpus-per-trial",
        type=float,
        default=None,
        help=f"CPUs per trial, also its torch threads (per worker with --workers-per-trial) "
        f"(default {Resources.cpus_per_trial:g})",
    )
    how.add_argument(
        "--gpus-per-trial",
        type=float,
        default=None,
        help="GPUs per trial (per worker with --workers-per-trial); fractions let small trials share "
        "a GPU, e.g. 0.5 packs two per GPU (default 0)",
    )
    how.add_argument(
        "--workers-per-trial",
        type=int,
        default=None,
        help="data-parallel processes per trial (>1: a Ray Train TorchTrainer inside the trial) (default 1)",
    )
    add_scheduler_flags(how)  # --scheduler fifo|asha|pbt, PBT's flags, retries, reuse (orchestrator/schedulers.py)


def add_place_flags(where) -> None:
    """Where the sweep runs and records: Ray, storage, MLflow, resume, the demo corpus's seed, registration."""
    where.add_argument(
        "--address", default=None, help="existing Ray cluster ('auto' on a `ray up` head); default: local Ray"
    )
    where.add_argument(
        "--storage",
        default=None,
        help="Tune results, checkpoints and the sweep record (dir or URI, e.g. s3://bucket/sweeps); "
        "default: ./ray_results",
    )
    where.add_argument("--tracking-uri", default=None, help=paths.TRACKING_URI_HELP)
    where.add_argument("--experiment", default=None, help="MLflow experiment; default: the sweep name")
    where.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="SWEEP_DIR",
        help="finish an interrupted sweep: its directory, or the newest one of NAME under --storage",
    )
    where.add_argument("--demo-seed", type=int, default=0, help="seed of the built-in demo corpus (default 0)")
    where.add_argument(
        "--register",
        default=None,
        metavar="NAME",
        help=f"register the best trial's model in the MLflow Model Registry as NAME (alias '{CHAMPION_ALIAS}')",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)
