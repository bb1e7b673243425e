"""Fan out a named sweep of fine-tuning trials with Ray Tune; every trial is an MLflow run.

    python -m orchestrator.sweep smoke            # local Ray, demo corpus, tiny model, ./mlruns
    python -m orchestrator.sweep list             # the named sweeps
"""
from __future__ import annotations

import argparse
import ast
import os
import shlex
import sys
import time
from pathlib import Path

from orchestrator import paths

TABLE_LIMIT = 30


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.sweep",
        description="Run a named sweep (a module of search_spaces/) on Ray Tune, tracked in MLflow.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("name", help="sweep name (e.g. smoke), or 'list' to show the named sweeps")
    parser.add_argument("--preset", default=None, help="a preset of the sweep (e.g. 'tiny': tiny model, CPU)")
    parser.add_argument("--data", type=Path, default=None,
                        help="shard directory (from orchestrator.ingest); default: the built-in demo corpus")
    parser.add_argument("--num-samples", type=int, default=None,
                        help="samples of the search space (grid points run once per sample)")
    parser.add_argument("--max-concurrent", type=int, default=None, help="trials running at once (default: as resources allow)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs reserved per trial (also its torch threads)")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0,
                        help="GPUs per trial; fractions let small trials share a GPU")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a trial config value (repeatable), e.g. --set learning_rate=3e-4")
    parser.add_argument("--address", default=None, help="existing Ray cluster ('auto' on a `ray up` head); default: local Ray")
    parser.add_argument("--storage", default=None, help="Tune results and checkpoints (dir or URI); default: ./ray_results")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI; default: SQLite under ./mlruns")
    parser.add_argument("--experiment", default=None, help="MLflow experiment; default: the sweep name")
    parser.add_argument("--demo-seed", type=int, default=0, help="seed of the built-in demo corpus")
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


def resolve_base(spec, preset: str | None, overrides: dict) -> dict:
    """The sweep's fixed values, with the preset and --set applied, validated against TrialConfig."""
    from workers.config import TrialConfig

    preset = preset or spec.default_preset
    if preset is not None and preset not in spec.presets:
        raise SystemExit(f"sweep {spec.name!r} has no preset {preset!r}; presets: {', '.join(spec.presets) or 'none'}")
    base = {**spec.base, **(spec.presets.get(preset, {}) if preset else {}), **overrides}
    space = {k: v for k, v in spec.space.items() if k not in overrides}
    unknown = sorted(set(base) | set(space))
    unknown = [k for k in unknown if k not in TrialConfig.field_names()]
    if unknown:
        raise SystemExit(f"unknown config key(s) {unknown}; valid keys: {', '.join(TrialConfig.field_names())}")
    try:
        TrialConfig.from_dict({k: v for k, v in base.items()})
    except (ValueError, TypeError) as error:
        raise SystemExit(f"invalid sweep config: {error}") from None
    return base, space


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.name == "list":
        print_sweeps()
        return 0
    import search_spaces

    try:
        spec = search_spaces.load(args.name)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    base, space = resolve_base(spec, args.preset, parse_overrides(args.overrides))
    data_dir = (args.data or paths.ensure_demo_corpus(args.demo_seed)).resolve()
    from shards.writer import read_manifest

    manifest = read_manifest(data_dir)
    tracking_uri = args.tracking_uri or paths.default_tracking_uri()
    results = run_sweep(spec, base, space, data_dir, manifest["content_hash"], tracking_uri, args)
    print_results(results, spec, space, tracking_uri)
    return 0


def run_sweep(spec, base: dict, space: dict, data_dir: Path, data_hash: str, tracking_uri: str, args):
    import ray
    from mlflow.tracking import MlflowClient
    from ray import tune

    from orchestrator.progress import TrialProgress
    from orchestrator.tracking import CloseChildRuns, ensure_experiment, git_commit
    from workers.trial import TRACKING_KEY, train_emotion

    client = MlflowClient(tracking_uri)
    experiment_id = ensure_experiment(client, args.experiment or spec.name, tracking_uri)
    tags = {"sweep": spec.name, "data_hash": data_hash, "git_commit": git_commit(), "start": str(base.get("start", ""))}
    parent = client.create_run(experiment_id, run_name=f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                               tags={**tags, "command": shlex.join(sys.argv), "data_dir": str(data_dir)})
    parent_id = parent.info.run_id
    print(f"sweep {spec.name}: MLflow parent run {parent_id} in experiment {args.experiment or spec.name!r}")

    if not ray.is_initialized():
        ray.init(address=args.address, include_dashboard=False, log_to_driver=False,
                 configure_logging=True, logging_level="WARNING")
    param_space = {
        **base,
        **space,
        "data_dir": str(data_dir),
        "num_threads": max(1, int(args.cpus_per_trial)),
        TRACKING_KEY: {"tracking_uri": tracking_uri, "experiment_id": experiment_id,
                       "parent_run_id": parent_id, "tags": sorted(tags.items())},
    }
    trainable = tune.with_resources(train_emotion, {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial})
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=spec.metric, mode=spec.mode, num_samples=args.num_samples or spec.num_samples,
            max_concurrent_trials=args.max_concurrent, reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=f"{spec.name}-{parent_id[:8]}",
            storage_path=str(args.storage or paths.default_storage()),
            callbacks=[CloseChildRuns(tracking_uri, experiment_id, parent_id, tags),
                       TrialProgress(spec.metric, list(space))],
            verbose=0,
        ),
    )
    status = "FAILED"
    try:
        results = tuner.fit()
        status = "FINISHED" if not results.errors else "FAILED"
        log_summary(client, parent_id, results, spec)
        return results
    finally:
        client.set_terminated(parent_id, status)


def log_summary(client, parent_id: str, results, spec) -> None:
    """Best trial's metrics and the whole table on the parent run."""
    try:
        best = results.get_best_result()
    except RuntimeError:
        return
    if best.metrics:
        for key, value in best.metrics.items():
            if isinstance(value, (int, float)) and "/" in key:
                client.log_metric(parent_id, f"best/{key}", float(value))
    client.log_text(parent_id, results_table(results, spec, []), "trials.txt")


def results_table(results, spec, tuned: list[str]) -> str:
    frame = results.get_dataframe()
    if frame.empty:
        return "(no trial reported)"
    tuned_cols = [f"config/{k}" for k in tuned if f"config/{k}" in frame.columns]
    test_cols = sorted(c for c in frame.columns if c.endswith("/accuracy") and c != spec.metric and not c.startswith("config/"))
    columns = ["trial_id", *tuned_cols, spec.metric, *test_cols, "trial_seconds"]
    columns = [c for c in columns if c in frame.columns]
    frame = frame.sort_values(spec.metric, ascending=spec.mode == "min", na_position="last")[columns]
    frame.columns = [c.removeprefix("config/") for c in frame.columns]
    return frame.head(TABLE_LIMIT).to_string(index=False, float_format=lambda v: f"{v:.4g}")


def print_results(results, spec, space: dict, tracking_uri: str) -> None:
    print()
    print(f"trials (best first by {spec.metric}):")
    print(results_table(results, spec, list(space)))
    if results.errors:
        print(f"\n{len(results.errors)} trial(s) failed; their errors are on their MLflow runs (tag 'error').")
    print("\nOpen the runs in the MLflow UI:")
    print(f"    mlflow ui --backend-store-uri {tracking_uri}" if tracking_uri.startswith("sqlite") else f"    {tracking_uri}")


if __name__ == "__main__":
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    sys.exit(main())
