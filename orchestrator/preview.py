"""`python -m orchestrator.sweep NAME --dry-run`: the trial grid a sweep would run, before any GPU hour.

Builds the grid exactly as a launch does (preset, --set, --folds, --num-samples, the corpus's speakers
and split plans) and prints it: per phase one line per trial (its number, name stem, differing values,
fold, speakers and clips), then the resources. It starts no Ray, touches no MLflow store and writes no
sweep record; `--init-from` is shown as given (resolving a models:/ alias would ask the server).
"""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator import plan_line
from orchestrator.grid import TrialGrid, Variant
from workers.vocabulary import ConfigKey

# Values that are not configuration: where the data is, and the split (shown as speakers and clips).
NOT_SHOWN = {*ConfigKey.PLAN, *ConfigKey.PLACE}


def preview(spec, args, overrides: dict, resources: dict) -> tuple[TrialGrid, str]:
    """The grid `args` would launch for the named sweep `spec` with the `--set` values `overrides` (as
    `orchestrator.sweep.parse_overrides` made them) and `resources`, and its text; ValueError as a launch."""
    from orchestrator import paths, preflight
    from orchestrator.grid import build_grid, canonical_spec
    from shards.splits import load_plans

    if args.resume:
        raise ValueError("--dry-run previews a new sweep; a resumed one runs the grid stored in its record")
    spec = canonical_spec(spec.with_preset(args.preset)).override(overrides)
    data_dir = (args.data or paths.ensure_demo_corpus(args.demo_seed)).resolve()
    manifest = preflight.open_data(data_dir)
    place = {ConfigKey.DATA_DIR: str(data_dir), ConfigKey.NUM_THREADS: max(1, int(resources["cpus_per_trial"]))}
    grid = build_grid(
        spec,
        manifest["speakers"],
        folds=args.folds,
        init_from=args.init_from,
        num_samples=args.num_samples,
        place=place,
        explicit_speakers=bool(set(ConfigKey.PLAN) & set(overrides)),
        stored_plans=load_plans(data_dir),
    )
    preflight.check_trials([v for p in grid.phases for v in p.variants], manifest, data_dir)
    return grid, grid_text(grid, manifest["counts"], data_dir, resources)


def grid_text(grid: TrialGrid, counts: dict[str, dict[str, int]], data_dir: Path, resources: dict) -> str:
    variants = [v for phase in grid.phases for v in phase.variants]
    differing = [k for k in _differing_keys(variants) if k not in NOT_SHOWN]
    lines = [
        f"sweep {grid.sweep} ({grid.kind}): {grid.num_trials} trial(s) in {len(grid.phases)} phase(s); "
        f"ranked by {grid.metric} ({grid.mode}); folds: {grid.folds or 'none'}",
        f"data {data_dir}: {len(counts)} speaker(s), {sum(_clips(counts, counts)):,} clips; {grid.plan}",
    ]
    lines += plan_line.lines(variants, counts)
    for phase in grid.phases:
        lines.append(f"\nphase {phase.name}: {len(phase.variants)} trial(s) (Tune adds its trial id to each name)")
        for number, variant in enumerate(phase.variants):
            lines.append(_trial_line(number, variant, differing, counts))
    lines.append("")
    lines.append(_resources_line(resources))
    lines.append("dry run: no Ray started, no MLflow run opened, nothing written.")
    return "\n".join(lines)


def _trial_line(number: int, variant: Variant, differing: list[str], counts: dict[str, dict[str, int]]) -> str:
    stem = "-".join(p for p in (variant.scenario, variant.config_id, variant.fold) if p)
    values = " ".join(f"{k}={_short(variant.values[k])}" for k in differing if k in variant.values)
    train = tuple(variant.values.get("train_speakers", ()))
    sets = [f"train {len(train)} spk/{sum(_clips(train, counts))} clips"]
    val_fraction = variant.values.get("val_fraction")
    if val_fraction:
        sets[0] += f" ({val_fraction:g} of them val)"
    for name, speakers in (variant.values.get("eval_sets") or {}).items():
        sets.append(f"{name} {','.join(speakers)}/{sum(_clips(speakers, counts))} clips")
    fold = f" fold={variant.fold}" if variant.fold else ""
    return f"  {number:>4d} {stem}{fold}  {values}  | {'; '.join(sets)}".rstrip()


def _resources_line(resources: dict) -> str:
    workers = resources.get("workers_per_trial", 1)
    per = " per worker" if workers > 1 else ""
    concurrent = resources.get("max_concurrent") or "as resources allow"
    return (
        f"resources: {resources['cpus_per_trial']:g} CPU(s) and {resources['gpus_per_trial']:g} GPU(s) per trial{per}"
        f"{f', {workers} data-parallel workers per trial' if workers > 1 else ''}; "
        f"at once: {concurrent}; scheduler {resources.get('scheduler') or 'fifo'}; "
        f"retries {resources.get('max_failures')}"
    )


def _differing_keys(variants: list[Variant]) -> list[str]:
    """Config keys whose values differ between trials (one trial: none)."""
    keys = sorted({k for v in variants for k in v.values})
    return [k for k in keys if len({json.dumps(v.values.get(k), sort_keys=True, default=str) for v in variants}) > 1]


def _clips(speakers, counts: dict[str, dict[str, int]]):
    return (sum(counts.get(s, {}).values()) for s in speakers)


def _short(value) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."
