"""The plan line a launched sweep prints, and the training clips per class it shows (as the dry run and the
parent run do): the imbalance a sweep trains on, visible before the first GPU hour.

Counted from the manifest (speaker x label counts) over each distinct set of training speakers of the
grid: the clips of those speakers, of which each trial holds `val_fraction` out for validation (the trial
run's own `train_clips_per_class` tag counts what it trained on). A sweep over folds has one set per fold.
"""

from __future__ import annotations

MAX_LINES = 8  # training sets listed on the console; the parent run's tag lists them all


def plan_text(planned, parent_id: str, experiment: str, directory: str) -> str:
    """What the driver prints once the parent run is open: the sweep, its data and labels, where it is
    recorded; the training clips per class; the other corpora it is tested on."""
    grid = planned.grid
    phases = ", ".join(f"{p.name} {len(p.variants)}" for p in grid.phases)
    labels = planned.labels
    text = [
        f"sweep {planned.spec.name}: {grid.num_trials} trials ({phases}) on {planned.data_dir.name}, {grid.plan}, "
        f"{len(labels)} labels ({', '.join(labels)}); MLflow parent run {parent_id} "
        f"in experiment {experiment!r}; record in {directory}"
    ]
    text += lines([v for p in grid.phases for v in p.variants], planned.manifest["counts"])
    text += [f"  also tested on {name}: {corpus.describe()}" for name, corpus in planned.held_out.items()]
    return "\n".join(text)


def training_sets(variants, counts: dict[str, dict[str, int]]) -> list[tuple[str, dict[str, int]]]:
    """(name, clips per label) for each distinct training-speaker set of `variants`, in grid order; the name
    is the fold (or the speakers, or '' when the whole grid trains on one set)."""
    sets: dict[tuple[str, ...], str] = {}
    for variant in variants:
        speakers = tuple(variant.values.get("train_speakers", ()))
        sets.setdefault(speakers, variant.fold or ",".join(speakers))
    labels = list(dict.fromkeys(label for per in counts.values() for label in per))
    named = []
    for speakers, name in sets.items():
        per_label = {label: sum(counts.get(s, {}).get(label, 0) for s in speakers) for label in labels}
        named.append(("" if len(sets) == 1 else name, per_label))
    return named


def lines(variants, counts: dict[str, dict[str, int]]) -> list[str]:
    """Console lines: '  train speakers' clips per class: neutral 120, angry 30 (imbalance 4.0x)', one per set."""
    from workers.core.class_balance import counts_text

    named = training_sets(variants, counts)
    shown = [
        f"  train speakers' clips per class{f' ({name})' if name else ''}: {counts_text(per)}" for name, per in named
    ]
    if len(shown) > MAX_LINES:
        shown = [*shown[:MAX_LINES], f"  ... and {len(shown) - MAX_LINES} more training sets (parent run tag)"]
    return shown


def tag(grid, counts: dict[str, dict[str, int]]) -> str:
    """The parent run's tag value: one 'name: counts' line per training set of `grid` (just the counts for one)."""
    from workers.core.class_balance import counts_text

    named = training_sets([v for p in grid.phases for v in p.variants], counts)
    return "\n".join(f"{name}: {counts_text(per)}" if name else counts_text(per) for name, per in named)
