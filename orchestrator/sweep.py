"""Fan out a named sweep of fine-tuning trials with Ray Tune; every trial is an MLflow run.

python -m orchestrator.sweep smoke                        # local Ray, demo corpus, tiny model, ./mlruns
python -m orchestrator.sweep transfer_zh --preset tiny    # the paper's transfer study, CPU-sized
python -m orchestrator.sweep finer_vs_vanilla --folds loso --gpus-per-trial 0.5
python -m orchestrator.sweep transfer_zh --resume         # finish the newest interrupted transfer_zh
python -m orchestrator.sweep list                         # the named sweeps
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import os
import shlex
import sys
import time
from pathlib import Path

from orchestrator import paths
from orchestrator.state import Resources

TABLE_LIMIT = 40
RESOURCE_DEFAULTS = dataclasses.asdict(Resources())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.sweep",
        description="Run a named sweep (a module of search_spaces/) on Ray Tune, tracked in MLflow.",
        epilog="Resource flags left out take the stored values on --resume, else the defaults shown.",
    )
    parser.add_argument("name", help="sweep name (e.g. smoke), or 'list' to show the named sweeps")
    what = parser.add_argument_group("what runs")
    what.add_argument("--preset", default=None, help="a preset of the sweep (e.g. 'tiny': tiny model, CPU, minutes)")
    what.add_argument(
        "--data",
        type=Path,
        default=None,
        help="shard directory (from orchestrator.ingest); default: the built-in demo corpus",
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
        help="override a trial config value in every trial (repeatable), e.g. --set learning_rate=3e-4",
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
        metavar="RUN_ID|DIR",
        help="start from this fine-tuned model (an MLflow run id with a model/ artifact, runs:/ URI, "
        "or a saved model directory); transfer_zh then skips training its English base",
    )
    how = parser.add_argument_group("resources and scheduling")
    how.add_argument(
        "--max-concurrent", type=int, default=None, help="trials running at once (default: as resources allow)"
    )
    how.add_argument(
        "--cpus-per-trial",
        type=float,
        default=None,
        help=f"CPUs per trial, also its torch threads (per worker with --workers-per-trial) "
        f"(default {RESOURCE_DEFAULTS['cpus_per_trial']:g})",
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
    how.add_argument(
        "--scheduler",
        choices=("fifo", "asha"),
        default=None,
        help="fifo: every trial runs to the end; asha: stop weak trials early, by epoch (default fifo)",
    )
    how.add_argument(
        "--max-failures",
        type=int,
        default=None,
        help="retries of a failing trial (from its last checkpoint) before it is marked FAILED (default 2)",
    )
    how.add_argument(
        "--reuse-actors",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run consecutive trials in the same worker process; a fresh one pays ~4 s of "
        "torch/transformers imports (default on)",
    )
    where = parser.add_argument_group("where")
    where.add_argument(
        "--address", default=None, help="existing Ray cluster ('auto' on a `ray up` head); default: local Ray"
    )
    where.add_argument(
        "--storage",
        default=None,
        help="Tune results, checkpoints and sweep state (dir or URI, e.g. s3://bucket/sweeps); default: ./ray_results",
    )
    where.add_argument("--tracking-uri", default=None, help="MLflow tracking URI; default: SQLite under ./mlruns")
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
    return parser.parse_args(argv)


def parse_overrides(pairs: list[str]) -> dict:
    """`key=value` strings to values: Python literals where they parse (3e-4, [1, 2], None), else strings."""
    values = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            values[key.strip()] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            values[key.strip()] = raw
    return values


def print_sweeps() -> None:
    import search_spaces

    for name in search_spaces.available():
        spec = search_spaces.load(name)
        presets = f"  [presets: {', '.join(spec.presets)}]" if spec.presets else ""
        print(f"{name:18s} {spec.description}{presets}")


def resources_from(args, stored: dict | None = None) -> dict:
    """Resource flags given now, over the stored ones (resume), over the defaults."""
    resources = {**RESOURCE_DEFAULTS, **(stored or {})}
    for key in RESOURCE_DEFAULTS:
        value = getattr(args, key)
        if value is not None:
            resources[key] = value
    if resources["workers_per_trial"] < 1:
        raise SystemExit("--workers-per-trial must be >= 1")
    if resources["cpus_per_trial"] <= 0 or resources["gpus_per_trial"] < 0:
        raise SystemExit("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
    return resources


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    args = parse_args(argv)
    if args.name == "list":
        print_sweeps()
        return 0
    import search_spaces

    try:
        spec = search_spaces.load(args.name)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    storage = args.storage or str(paths.default_storage())
    if "://" not in storage:
        storage = str(Path(storage).resolve())
        # Frequent experiment snapshots: a crashed driver then loses at most this much of Tune's state.
        os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
        # A local snapshot costs milliseconds; Tune's "snapshotting may become a bottleneck" warning
        # (cached head-only epochs checkpoint in quick succession) is about cloud storage.
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    state = resume_state(args, storage) if args.resume else new_sweep(spec, args, storage)
    if state.status == "finished":
        print(f"sweep {state.directory} already finished; nothing to resume.")
        return 0
    from orchestrator.runner import run_sweep

    code = run_sweep(state, address=args.address)
    if code == 0:
        finish(state)
    return code


def new_sweep(spec, args, storage: str):
    """Plan every trial, open the MLflow parent run, and write the sweep state (before anything runs)."""

    from orchestrator.plan import PlanError, build_plan
    from orchestrator.state import SweepState, sweep_dir_name
    from orchestrator.store_lock import open_store
    from orchestrator.tracking import ensure_experiment, git_commit, open_parent
    from shards.integrity import ShardIntegrityError, verify_shards_once
    from shards.writer import read_manifest

    overrides = parse_overrides(args.overrides)
    resources = resources_from(args)
    try:
        spec = spec.with_preset(args.preset).override(overrides)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    data_dir = (args.data or paths.ensure_demo_corpus(args.demo_seed)).resolve()
    manifest = read_manifest(data_dir)
    try:
        verify_shards_once(data_dir)  # before any trial: corrupt shards stop the sweep here, naming the file
    except ShardIntegrityError as error:
        raise SystemExit(str(error)) from None
    tracking_uri = args.tracking_uri or paths.default_tracking_uri()
    init_from = resolve_init_from(args.init_from, tracking_uri) if args.init_from else None
    try:
        plan = build_plan(
            spec,
            manifest["speakers"],
            folds=args.folds,
            init_from=init_from,
            num_samples=args.num_samples,
            place={"data_dir": str(data_dir), "num_threads": max(1, int(resources["cpus_per_trial"]))},
            explicit_speakers=bool({"train_speakers", "eval_sets"} & set(overrides)),
        )
    except PlanError as error:
        raise SystemExit(str(error)) from None

    client = open_store(tracking_uri)  # two sweeps on one fresh store: created by one
    experiment = args.experiment or spec.name
    experiment_id = ensure_experiment(client, experiment, tracking_uri)
    commit = git_commit()
    tags = {
        "sweep": spec.name,
        "data_hash": manifest["content_hash"],
        "git_commit": commit,
        "command": shlex.join(sys.argv),
        "data_dir": str(data_dir),
        "preset": args.preset or spec.default_preset or "",
        "folds": args.folds or "",
        "init_from": init_from or "",
    }
    run_name = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    parent_id = open_parent(client, experiment_id, run_name, tags)
    directory = f"{storage.rstrip('/')}/{sweep_dir_name(spec.name, parent_id)}"
    client.set_tag(parent_id, "sweep_dir", directory)
    state = SweepState(
        directory=directory,
        sweep=spec.name,
        tracking_uri=tracking_uri,
        experiment_id=experiment_id,
        parent_run_id=parent_id,
        data_dir=str(data_dir),
        data_hash=manifest["content_hash"],
        plan=plan.to_dict(),
        resources=resources,
        command=list(sys.argv),
        git_commit=commit,
    )
    state.save()
    phases = ", ".join(f"{p.name} {len(p.variants)}" for p in plan.phases)
    print(
        f"sweep {spec.name}: {plan.num_trials} trials ({phases}); MLflow parent run {parent_id} "
        f"in experiment {experiment!r}; state in {directory}",
        flush=True,
    )
    return state


def resume_state(args, storage: str):
    from mlflow.tracking import MlflowClient

    from orchestrator.state import SweepState, latest_sweep_dir
    from orchestrator.tracking import reopen_parent

    directory = args.resume
    if directory == "latest":
        directory = latest_sweep_dir(storage, args.name)
        if directory is None:
            raise SystemExit(f"no sweep of {args.name!r} under {storage} to resume; pass its directory to --resume")
    try:
        state = SweepState.load(directory)
    except FileNotFoundError as error:
        raise SystemExit(str(error)) from None
    if state.sweep != args.name:
        raise SystemExit(f"{directory} is a {state.sweep!r} sweep, not {args.name!r}")
    ignored = [
        flag
        for flag, value in (
            ("--preset", args.preset),
            ("--set", args.overrides),
            ("--folds", args.folds),
            ("--num-samples", args.num_samples),
            ("--init-from", args.init_from),
            ("--data", args.data),
        )
        if value
    ]
    if ignored:
        print(f"--resume runs the stored plan; ignoring {', '.join(ignored)}")
    state.resources = resources_from(args, state.resources)
    if state.status != "finished":
        reopen_parent(MlflowClient(state.tracking_uri), state.parent_run_id)
    print(f"resuming sweep {state.sweep} from {directory} (MLflow parent run {state.parent_run_id})", flush=True)
    return state


def resolve_init_from(value: str, tracking_uri: str) -> str:
    """--init-from as a location trials can read: a model directory or an MLflow `runs:/<id>/model` URI."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    local = Path(value).expanduser()
    if local.exists():
        if not (local / "model.safetensors").exists():
            raise SystemExit(f"--init-from {value}: not a saved emotion model (no model.safetensors)")
        return str(local.resolve())
    uri = value if value.startswith("runs:/") else f"runs:/{value}/model"
    run_id = uri.removeprefix("runs:/").split("/")[0]
    try:
        artifacts = {a.path for a in MlflowClient(tracking_uri).list_artifacts(run_id, "model")}
    except MlflowException as error:
        raise SystemExit(
            f"--init-from {value}: neither a directory nor an MLflow run in {tracking_uri} ({error})"
        ) from None
    if not any(a.endswith("model.safetensors") for a in artifacts):
        raise SystemExit(f"--init-from {value}: run {run_id} has no model/ artifact with model.safetensors")
    return uri


def finish(state) -> None:
    """Fold statistics, the trial table, the best configuration per scenario; then close the parent run."""
    from mlflow.tracking import MlflowClient

    from orchestrator.plan import SweepPlan
    from orchestrator.summary import best_per_scenario, fold_rows, log_folds, paper_tables
    from orchestrator.tracking import child_runs

    client = MlflowClient(state.tracking_uri)
    plan = SweepPlan.from_dict(state.plan)
    runs = child_runs(client, state.experiment_id, state.parent_run_id)
    table = trials_table(runs, plan)
    client.log_text(state.parent_run_id, table, "trials.txt")
    print(f"\ntrials (best first by {plan.metric}):\n{table}")
    rows = fold_rows(runs)
    if rows:
        params_of = {
            r.data.tags.get("config_id"): " ".join(
                f"{k}={r.data.params.get(k)}" for k in plan.tuned if k in r.data.params
            )
            for r in runs
        }
        print(log_folds(client, state.parent_run_id, rows, params_of))
    best = best_per_scenario(runs, plan.metric, plan.mode)
    tables = paper_tables(client, best, plan.metric, list(plan.tuned))
    client.log_text(state.parent_run_id, tables, "summary.txt")
    print(f"best configuration per scenario (by {plan.metric}; held-out test sets as in the paper):\n{tables}")
    _log_best(client, state.parent_run_id, best, plan.metric, plan.mode)
    failed = [r for r in runs if r.info.status == "FAILED"]
    if failed:
        print(
            f"{len(failed)} trial(s) failed; their errors are on their MLflow runs (tag 'error'). "
            f"`--resume {state.directory}` retries them."
        )
    client.set_terminated(state.parent_run_id, "FAILED" if failed else "FINISHED")
    uri = state.tracking_uri
    print("Open the runs in the MLflow UI:")
    print(f"    mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite") else f"    {uri}")


def trials_table(runs: list, plan) -> str:
    import pandas as pd

    if not runs:
        return "(no trial ran)"
    rows = []
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        row = {"trial_id": tags.get("trial_id", ""), "scenario": tags.get("scenario", ""), "status": run.info.status}
        if plan.folds:
            row["fold"] = tags.get("fold", "")
        row.update({k: run.data.params.get(k, "") for k in plan.tuned})
        row[plan.metric] = metrics.get(plan.metric)
        row.update(
            {
                k: v
                for k, v in sorted(metrics.items())
                if k.startswith("test_") and k.count("/") == 1 and k.endswith("/accuracy")
            }
        )
        row["trial_seconds"] = metrics.get("trial_seconds")
        rows.append(row)
    frame = pd.DataFrame(rows).sort_values(plan.metric, ascending=plan.mode == "min", na_position="last")
    return frame.head(TABLE_LIMIT).to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-")


def _log_best(client, parent_run_id: str, best: dict, metric: str, mode: str) -> None:
    """The best trial's metrics as `best/...` on the parent (best over all scenarios)."""
    if not best:
        return
    from mlflow.entities import Metric

    sign = 1 if mode == "max" else -1
    top = max(best.values(), key=lambda r: sign * r.data.metrics[metric])
    now = int(time.time() * 1000)
    metrics = [
        Metric(f"best/{k}", float(v), now, 0)
        for k, v in top.data.metrics.items()
        if "/" in k and not k.startswith("trial/")
    ]
    for start in range(0, len(metrics), 500):
        client.log_batch(parent_run_id, metrics=metrics[start : start + 500])
    client.set_tag(parent_run_id, "best_trial_id", top.data.tags.get("trial_id", ""))


if __name__ == "__main__":
    sys.exit(main())
