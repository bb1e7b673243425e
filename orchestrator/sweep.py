"""Fan out a named sweep of trials with Ray Tune; every trial is an MLflow run.

A sweep's trials fine-tune a speech encoder, or run a baseline (`features`: openSMILE functionals
and a classifier; `text`: a text encoder on the transcripts): the sweep names its kind
(workers.kinds), and everything here is the same for every kind.

The sweep's life, in one place: `main` opens it (`new_sweep`, or `resume_sweep` from its record),
runs its phases (`run_sweep`, one Tune experiment each: `orchestrator.tuner`) and closes it
(`finish`: the summary from `orchestrator.results` on the parent run).

python -m orchestrator.sweep smoke                        # local Ray, demo corpus, tiny model, ./mlruns
python -m orchestrator.sweep smoke --data shards/iemocap --eval-data ravdess=shards/ravdess \
    --eval-label-map angry=ang,happy=hap,neutral=neu        # any corpus; tested on another one too
python -m orchestrator.sweep transfer_zh --preset tiny    # the paper's transfer study, CPU-sized
python -m orchestrator.sweep finer_vs_vanilla --folds loso --gpus-per-trial 0.5
python -m orchestrator.sweep transfer_zh --resume         # finish the newest interrupted transfer_zh
python -m orchestrator.sweep features                     # the acoustic-features baseline, CPU, minutes
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
from collections.abc import Callable
from pathlib import Path

from orchestrator import paths, plan_line, run_notes, tracking
from orchestrator.flags import CHAMPION_ALIAS, build_parser, parse_args  # noqa: F401 (parse_args: for callers)
from orchestrator.init_from import resolve_init_from
from orchestrator.record import Resources, SweepRecord
from orchestrator.schedulers import check_scheduler
from orchestrator.startup import TIMELINE, abandon_ray_start, start_ray_in_background
from workers.kinds import FINETUNE, trial_kind
from workers.vocabulary import ConfigKey, Key, RunStatus, SweepTag, Tag

EXIT_TRIALS_FAILED = 1  # the sweep ran to its end, but some trial ended FAILED (after its retries)


class UsageError(ValueError):
    """A flag or argument that cannot work; `main` reports it through `parser.error` (status 2)."""


def parse_overrides(pairs: list[str], kind: str = FINETUNE) -> dict:
    """`--set key=value` strings checked once, at the door, through the sweep's trial kind: each key
    becomes the config field it names (a Hugging Face alias resolved), each value a Python literal where
    it parses (3e-4, [1, 2], None; else a string) as that field holds it. Everything downstream (the
    sweep's spec, the grid, preflight, the trials) gets these canonical, typed values."""
    values: dict = {}
    given_as: dict[str, str] = {}  # field -> the key it was given as
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        try:
            field_name, value = trial_kind(kind).setting(key, value)
        except ValueError as error:
            raise UsageError(f"--set {pair}: {error}") from None
        if given_as.setdefault(field_name, key) != key:
            raise UsageError(f"--set {given_as[field_name]} and --set {key} both set {field_name!r}")
        values[field_name] = value
    return values


def print_sweeps() -> None:
    import search_spaces

    for name in search_spaces.available():
        spec = search_spaces.load(name)
        presets = f"  [presets: {', '.join(spec.presets)}]" if spec.presets else ""
        print(f"{name:18s} {spec.description}{presets}")


def resources_from(args, stored: dict | None = None) -> dict:
    """Resource flags given now, over the stored ones (resume), over the defaults."""
    try:
        return Resources.merged(vars(args), stored)
    except ValueError as error:
        raise UsageError(str(error)) from None


def trial_need(resources: dict) -> dict[str, float]:
    """What one trial process asks Ray for (one worker's share for a data-parallel trial)."""
    return {"CPU": resources["cpus_per_trial"], "GPU": resources["gpus_per_trial"]}


def check_resources(resources: dict, kind: str) -> None:
    if resources["workers_per_trial"] > 1 and kind != FINETUNE:
        raise SystemExit(f"--workers-per-trial > 1 runs data-parallel fine-tuning; a {kind!r} trial is one process")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.name == "list":
        print_sweeps()
        return 0
    try:
        return run_main(args)
    except UsageError as error:
        parser.error(str(error))


def run_main(args: argparse.Namespace) -> int:
    """The sweep the parsed flags ask for; usage errors raise UsageError, before any work where they can."""
    import search_spaces

    try:
        spec = search_spaces.load(args.name)
        overrides = parse_overrides(args.overrides, spec.kind)  # --set and resource flags: before any work
        resources_from(args)
    except ValueError as error:  # also UsageError
        raise UsageError(str(error)) from None
    if args.dry_run:
        from orchestrator.preview import preview

        try:  # GridError, PreflightError, a split plan's own
            grid, text = preview(spec, args, overrides, resources_from(args))
        except ValueError as error:
            raise UsageError(str(error)) from None
        check_resources(resources_from(args), grid.kind)
        print(text)
        return 0
    storage = args.storage or str(paths.default_storage())
    if "://" not in storage:
        storage = str(Path(storage).resolve())
        # Frequent experiment snapshots: a crashed driver then loses at most this much of Tune's state.
        os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
        # A local snapshot costs milliseconds; Tune's "snapshotting may become a bottleneck" warning
        # (cached head-only epochs checkpoint in quick succession) is about cloud storage.
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    TIMELINE.mark("flags checked")
    try:
        if args.resume:
            start_ray_in_background(args.address)  # while mlflow loads and the record's store is checked
            record = resume_sweep(args, storage)
        else:
            planned = plan_sweep(spec, args, overrides)
            # Ray starts once nothing can refuse the sweep (a refusal never waits for Ray), and comes up
            # while mlflow loads and the parent run opens.
            start_ray_in_background(args.address)
            record = open_sweep(planned, args, storage)
    except BaseException:
        abandon_ray_start()
        raise
    if record.status == "finished":
        print(f"sweep {record.directory} already finished; nothing to resume.")
        return 0
    code = run_sweep(record, address=args.address, quiet=args.quiet)
    if code != 0:
        return code
    failed = finish(record, register=args.register)
    if failed:
        # The last line, for CI logs and `ray job submit`: which trials, and where their errors are.
        print(
            f"sweep {record.sweep} FAILED: {len(failed)} trial(s) failed: {', '.join(failed)}. Their errors: "
            f"tag '{Tag.ERROR}' on their MLflow runs, and error.txt in their trial directories under "
            f"{record.directory}. `--resume {record.directory}` retries them.",
            flush=True,
        )
        return EXIT_TRIALS_FAILED
    return 0


# ---------------------------------------------------------------- open


def new_sweep(spec, args, storage: str, overrides: dict | None = None) -> SweepRecord:
    """Expand every trial, open the MLflow parent run, and save the sweep record (before anything runs).

    `overrides`: the --set values as `parse_overrides` made them (None: parsed from `args` here)."""
    if overrides is None:
        overrides = parse_overrides(args.overrides, spec.kind)
    return open_sweep(plan_sweep(spec, args, overrides), args, storage)


def plan_sweep(spec, args, overrides: dict) -> PlannedSweep:
    """Every trial expanded and checked on the driver, the shards verified: what refuses a sweep, before Ray
    starts (a refused sweep never waits for Ray)."""
    from shards.integrity import ShardIntegrityError, verify_shards_once

    resources = resources_from(args)
    tracking_uri = args.tracking_uri or paths.default_tracking_uri()
    spec, data_dir, manifest = open_inputs(spec, args, overrides, tracking_uri)
    try:  # once per shard version (a marker after): corrupt shards stop the sweep here, naming the file
        verify_shards_once(data_dir)
    except ShardIntegrityError as error:
        raise SystemExit(str(error)) from None
    TIMELINE.mark("inputs checked")
    planned = plan_trials(spec, args, overrides, data_dir, manifest, resources, tracking_uri)
    check_resources(resources, planned.grid.kind)
    check_scheduler(resources, planned.grid)  # PBT: trials that differ only in what it mutates
    TIMELINE.mark("trials planned")
    return planned


def open_sweep(planned: PlannedSweep, args, storage: str) -> SweepRecord:
    """The planned sweep's MLflow parent run opened and its record saved."""
    tracking_uri = args.tracking_uri or paths.default_tracking_uri()
    record = open_parent_run(planned, args, storage, resources_from(args), tracking_uri)
    TIMELINE.mark("MLflow parent run open")
    return record


@dataclasses.dataclass(frozen=True)
class PlannedSweep:
    """A sweep's trials as checked on the driver, with what its parent run records about them."""

    spec: object  # search_spaces.SweepSpec, preset and --set applied
    grid: object  # orchestrator.grid.TrialGrid
    data_dir: Path
    manifest: dict
    held_out: dict  # set name -> orchestrator.eval_data.HeldOutCorpus (--eval-data)
    init_from: str | None

    @property
    def labels(self) -> tuple[str, ...]:
        from shards.writer import manifest_labels

        return manifest_labels(self.manifest)


def open_inputs(spec, args, overrides: dict, tracking_uri: str):
    """(the spec with its preset and --set applied, the data directory, its manifest): the cheap checks
    first (a bad --set costs no demo corpus, a bad server no data); the shards' integrity: `open_sweep`."""
    from orchestrator import preflight
    from orchestrator.grid import canonical_spec

    try:  # the sweep's own keys canonical too, so that a --set key replaces the sweep's value under an alias
        spec = canonical_spec(spec.with_preset(args.preset)).override(overrides)
        if set(ConfigKey.PLAN) & set(overrides):
            preflight.check_speaker_leak(spec.base)
        preflight.check_tracking(tracking_uri)
        data_dir = (args.data or paths.ensure_demo_corpus(args.demo_seed)).resolve()
        manifest = preflight.open_data(data_dir)
    except ValueError as error:
        raise UsageError(str(error)) from None
    try:  # before the parent run and any trial; one line, as the refusal is the whole message
        preflight.check_cluster_tracking(tracking_uri, args.address, trial_need(resources_from(args)))
    except preflight.PreflightError as error:
        raise SystemExit(str(error)) from None
    return spec, data_dir, manifest


def plan_trials(spec, args, overrides: dict, data_dir: Path, manifest: dict, resources: dict, tracking_uri: str):
    """Every trial of the sweep on this data, checked on the driver before any trial: bad speakers, empty
    sets or missing weights cost no attempts."""
    from orchestrator import preflight
    from orchestrator.eval_data import held_out_corpora, parse_label_maps
    from orchestrator.grid import build_grid
    from shards.splits import load_plans
    from shards.writer import manifest_labels

    held_out = held_out_corpora(args.eval_data, args.eval_label_map, manifest_labels(manifest))
    try:
        init_from = resolve_init_from(args.init_from, tracking_uri) if args.init_from else None
    except ValueError as error:
        raise UsageError(str(error)) from None
    place = {ConfigKey.DATA_DIR: str(data_dir), ConfigKey.NUM_THREADS: max(1, int(resources["cpus_per_trial"]))}
    if held_out:
        place[ConfigKey.EXTRA_EVAL_DATA] = {name: str(corpus.directory) for name, corpus in held_out.items()}
        place[ConfigKey.EVAL_LABEL_MAP] = parse_label_maps(args.eval_label_map)
    try:
        grid = build_grid(
            spec,
            manifest["speakers"],
            folds=args.folds,
            init_from=init_from,
            num_samples=args.num_samples,
            place=place,
            explicit_speakers=bool(set(ConfigKey.PLAN) & set(overrides)),
            stored_plans=load_plans(data_dir),
        )
    except ValueError as error:  # GridError, and the split plan's own (a speaker leak, no training speakers)
        raise UsageError(str(error)) from None
    variants = [v for phase in grid.phases for v in phase.variants]
    try:
        preflight.check_trials(variants, manifest, data_dir)
        preflight.check_starts(variants)
    except preflight.PreflightError as error:
        raise SystemExit(str(error)) from None
    return PlannedSweep(spec, grid, data_dir, manifest, held_out, init_from)


def open_parent_run(planned: PlannedSweep, args, storage: str, resources: dict, tracking_uri: str) -> SweepRecord:
    """The sweep's MLflow parent run and its record (saved), announced in one line."""
    from orchestrator.record import sweep_dir_name

    spec, grid = planned.spec, planned.grid
    client = tracking.client_for(tracking_uri)
    experiment = args.experiment or spec.name
    experiment_id = tracking.ensure_experiment(client, experiment, tracking_uri)
    commit = tracking.git_commit()
    run_name = f"{spec.name} {time.strftime('%b %d %H:%M')}"  # the runs table shows ~18 characters of a name
    parent_id = tracking.open_parent(client, experiment_id, run_name, parent_tags(planned, args, commit))
    run_notes.log_sweep_start(client, parent_id, grid, spec, sys.argv)
    directory = f"{storage.rstrip('/')}/{sweep_dir_name(spec.name, parent_id)}"
    tracking.set_tags(client, parent_id, {Tag.SWEEP_DIR: directory})
    record = SweepRecord(
        directory=directory,
        sweep=spec.name,
        tracking_uri=tracking_uri,
        experiment_id=experiment_id,
        parent_run_id=parent_id,
        data_dir=str(planned.data_dir),
        data_hash=planned.manifest["content_hash"],
        grid=grid.to_dict(),
        resources=resources,
        command=list(sys.argv),
        git_commit=commit,
    )
    record.save()
    print(plan_line.plan_text(planned, parent_id, experiment, directory), flush=True)
    return record


def parent_tags(planned: PlannedSweep, args, commit: str) -> dict[str, str]:
    """What the parent run says about the sweep: its name, data, command, kind, ranking, labels, held-out corpora."""
    spec, grid = planned.spec, planned.grid
    return {
        Tag.SWEEP: spec.name,
        Tag.DATA_HASH: planned.manifest["content_hash"],
        Tag.GIT_COMMIT: commit,
        Tag.COMMAND: shlex.join(sys.argv),
        Tag.DATA_DIR: str(planned.data_dir),
        Tag.PRESET: args.preset or spec.default_preset or "",
        Tag.FOLDS: args.folds or "",
        Tag.INIT_FROM: planned.init_from or "",
        Tag.TRIAL_KIND: grid.kind,
        SweepTag.METRIC: grid.metric,
        SweepTag.MODE: grid.mode,
        SweepTag.SCENARIOS: ",".join(spec.scenario_order()),  # what the report orders and plots by
        SweepTag.MIXING_KNOB: spec.mixing_knob or "",
        Tag.LABELS: ",".join(planned.labels),
        Tag.TRAIN_CLIPS_PER_CLASS: plan_line.tag(grid, planned.manifest["counts"]),
        **{Tag.eval_data(name): corpus.describe() for name, corpus in planned.held_out.items()},
        **tracking.source_tags(commit),
    }


def resume_sweep(args, storage: str) -> SweepRecord:
    """The record of an interrupted sweep, with the resources given now; its parent run reopened."""
    from orchestrator.record import latest_sweep_dir

    directory = args.resume
    if directory == "latest":
        directory = latest_sweep_dir(storage, args.name)
        if directory is None:
            raise UsageError(f"no sweep of {args.name!r} under {storage} to resume; pass its directory to --resume")
    try:
        record = SweepRecord.load(directory)
    except FileNotFoundError as error:
        raise UsageError(str(error)) from None
    if record.sweep != args.name:
        raise UsageError(f"{directory} is a {record.sweep!r} sweep, not {args.name!r}")
    from orchestrator import preflight

    moved = paths.absolute_tracking_uri(args.tracking_uri) if args.tracking_uri else record.tracking_uri
    if moved != record.tracking_uri:
        # The same store at a new address: the head's server of a new SLURM job, a restarted head.
        print(f"--resume: the sweep's MLflow store at {moved} (was {record.tracking_uri})")
        record.tracking_uri = moved
    try:
        preflight.check_tracking(record.tracking_uri)
        preflight.check_cluster_tracking(
            record.tracking_uri, args.address, trial_need(resources_from(args, record.resources))
        )
    except preflight.PreflightError as error:
        raise SystemExit(str(error)) from None
    if tracking.get_run(tracking.client_for(record.tracking_uri), record.parent_run_id) is None:
        raise SystemExit(f"{record.tracking_uri} holds no run {record.parent_run_id}: not this sweep's MLflow store")
    ignored = [
        flag
        for flag, value in (
            ("--preset", args.preset),
            ("--set", args.overrides),
            ("--folds", args.folds),
            ("--num-samples", args.num_samples),
            ("--init-from", args.init_from),
            ("--data", args.data),
            ("--eval-data", args.eval_data),
            ("--eval-label-map", args.eval_label_map),
        )
        if value
    ]
    if ignored:
        print(f"--resume runs the stored trial grid; ignoring {', '.join(ignored)}")
    if record.status == "finished":
        return record
    from orchestrator.tuner import check_phases_open

    record.resources = resources_from(args, record.resources)
    check_phases_open(record)  # before the record or MLflow changes: a failure here leaves both as they were
    check_resources(record.resources, record.grid.get("kind", FINETUNE))
    record.status = "running"
    record.save()
    tracking.reopen_parent(tracking.client_for(record.tracking_uri), record.parent_run_id)
    print(f"resuming sweep {record.sweep} from {directory} (MLflow parent run {record.parent_run_id})", flush=True)
    return record


# ---------------------------------------------------------------- run


class SweepInterrupted(Exception):
    """The driver was interrupted (Ctrl-C) before every trial ended."""


def run_sweep(
    record: SweepRecord, address: str | None = None, log: Callable[[str], None] = print, quiet: bool = False
) -> int:
    """Run (or finish) the sweep's phases; returns the process exit code.

    The record is saved when a phase is done (and the pretrain phase's base model known) and when the
    sweep ends; no child run stays RUNNING, however it ends."""
    from orchestrator.grid import TrialGrid, fill_init_from
    from orchestrator.tuner import init_ray, run_phase, trial_statuses, was_interrupted

    client = tracking.client_for(record.tracking_uri)
    grid = TrialGrid.from_dict(record.grid)
    init_ray(address)
    record.status = "running"
    statuses: dict[str, str] = {}
    failed = 0
    try:
        for phase in grid.phases:
            if phase.name in record.phases_done:
                continue
            if phase.name != "pretrain" and record.base_model:
                phase = fill_init_from(phase, record.base_model)
            results = run_phase(record, grid, phase, quiet=quiet)
            # Ctrl-C: Tune reports the trials it stopped as terminated, like finished ones. Fewer ended
            # trials than planned: Tune stopped early (it creates trials lazily; unstarted ones are not in `results`).
            if was_interrupted() or results.num_terminated + results.num_errors < len(phase.variants):
                raise SweepInterrupted
            statuses.update(trial_statuses(results))
            failed += results.num_errors
            if phase.name == "pretrain" and results.num_errors:
                _end(client, record, "failed", statuses, default=RunStatus.FAILED)
                log(_NO_BASE.format(sweep=record.sweep, directory=record.directory))
                return 1
            _phase_done(record, phase.name, results, log)
    except (KeyboardInterrupt, SweepInterrupted):
        # Tune marks the trials it stops on Ctrl-C as terminated; only a completed tag says finished.
        closed = _end(client, record, "interrupted", {}, default=RunStatus.KILLED)
        log(
            f"\ninterrupted: {closed.get(RunStatus.KILLED, 0)} unfinished trial run(s) marked KILLED in MLflow "
            f"(they continue on resume). Finish the sweep with:\n"
            f"    python -m orchestrator.sweep {record.sweep} --resume {record.directory}"
        )
        return 130
    except BaseException:
        _end(client, record, "failed", statuses, default=RunStatus.FAILED)
        raise
    tracking.close_open_children(
        client, record.experiment_id, record.parent_run_id, statuses, RunStatus.KILLED, drop_orphans=True
    )
    record.status = "failed" if failed else "finished"
    record.save()
    return 0


_NO_BASE = (
    "the pretrain trial (the base every other trial starts from) failed after its retries; its error is "
    "on its MLflow run (tag 'error'). Fix the cause and run\n"
    "    python -m orchestrator.sweep {sweep} --resume {directory}\n"
    "or give a base with --init-from."
)


def _phase_done(record: SweepRecord, phase: str, results, log) -> None:
    """Record what a phase leaves for the next: the base model (pretrain), and that it is done.

    A phase with failed trials is not done: --resume restores it, and they retry."""
    from orchestrator.tuner import base_model_of

    if phase == "pretrain":
        record.base_model = base_model_of(results, record)
        log(f"base model for the next phase: {record.base_model}")
    if not results.num_errors:
        record.phases_done.append(phase)
    if phase == "pretrain" or not results.num_errors:
        record.save()


def _end(client, record: SweepRecord, status: str, statuses: dict[str, str], default: str) -> dict[str, int]:
    """End a sweep that did not run through: save its status, close its open child runs (trials Tune
    reported on get their status, others `default`) and its parent run."""
    record.status = status
    record.save()
    closed = tracking.close_open_children(client, record.experiment_id, record.parent_run_id, statuses, default)
    tracking.close_run(client, record.parent_run_id, RunStatus.KILLED if status == "interrupted" else RunStatus.FAILED)
    return closed


# ---------------------------------------------------------------- close


def finish(record: SweepRecord, register: str | None = None) -> list[str]:
    """Close the sweep: trial table, fold statistics and the best configuration per scenario (all from
    `orchestrator.results`) on the parent run and the console; the best trial's model registered as
    `register` (alias champion) when given; then the parent run's final status.

    Returns the ids of the trials that ended FAILED."""
    from orchestrator import summary
    from orchestrator.grid import TrialGrid
    from orchestrator.results import fold_metrics, fold_rows, load_sweep

    client = tracking.client_for(record.tracking_uri)
    grid = TrialGrid.from_dict(record.grid)
    parent_id = record.parent_run_id
    results = load_sweep(client, tracking.get_run(client, parent_id))
    tuned = list(grid.tuned)
    table = summary.trials_table(results, tuned, folds=bool(grid.folds))
    tracking.log_text(client, parent_id, table, Key.TRIALS_TABLE)
    print(f"\ntrials (best first by {results.metric}):\n{table}")
    rows = fold_rows(results.trials)
    if rows:
        tracking.log_metrics(client, parent_id, fold_metrics(rows))
        folds = summary.fold_table(rows, summary.params_by_config(results.trials, tuned))
        tracking.log_text(client, parent_id, folds, Key.FOLDS_TABLE)
        print(folds)
    tables = summary.paper_tables(results.best_per_scenario(), results.metric, tuned, client)
    tracking.log_text(client, parent_id, tables, Key.SUMMARY)
    print(f"best configuration per scenario (by {results.metric}; held-out test sets as in the paper):\n{tables}")
    best = results.best()
    if best is not None:
        tracking.log_metrics(client, parent_id, _best_metrics(best.metrics))
        tracking.set_tags(
            client, parent_id, {Tag.BEST_TRIAL_ID: best.trial_id, SweepTag.BEST_CONFIG_ID: best.config_id or ""}
        )
        if register:
            version = tracking.register_model(record.tracking_uri, best.run_id, register, CHAMPION_ALIAS)
            print(
                f"registered the best trial's model (trial {best.trial_id}, run {best.run_id}) as {register} "
                f"version {version}: models:/{register}@{CHAMPION_ALIAS}"
            )
    elif register:
        print(f"no trial finished: nothing registered as {register}")
    failed = sorted(t.trial_id for t in results.trials if t.status == RunStatus.FAILED)
    run_notes.note_sweep_end(client, record, results, table)
    tracking.close_run(client, parent_id, RunStatus.FAILED if failed else RunStatus.FINISHED)
    print("\n".join(run_notes.ui_lines(record.tracking_uri, record.experiment_id)))
    return failed


def _best_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The best trial's final metrics as `best/...` on the parent (its learning curves left out)."""
    return {f"{Key.BEST_PREFIX}{k}": v for k, v in metrics.items() if "/" in k and not k.startswith(Key.CURVE_PREFIX)}


def exit_without_teardown(code: int) -> None:
    """Exit once everything is written: the atexit handlers run (Ray's shutdown, the local Ray's record),
    the streams are flushed, and the interpreter's teardown of the modules the driver loaded (mlflow,
    sqlalchemy, Ray Tune: 1.2 s of a 2-core machine after the sweep's last line) is skipped."""
    import atexit
    import logging

    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away, a closed stream: nothing left to write to
            pass
    os._exit(code)


if __name__ == "__main__":
    exit_without_teardown(main())
