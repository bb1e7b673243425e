"""The report's figures (matplotlib, Agg): the transfer curve, the folds' spread, the knob grid.

Apart from the text on purpose: a section decides what to show and hands plain values here; these
functions only draw and save a PNG.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from orchestrator.report.cells import as_float, natural
from orchestrator.results import TrialRun

MAX_LEVELS = 6  # a knob with more values than this is drawn on a continuous axis (and not used for colour)
SERIES_STYLES = [("tab:red", "o"), ("tab:blue", "s"), ("tab:green", "^"), ("tab:purple", "D"), ("tab:brown", "v")]
REFERENCE_STYLES = ["--", ":", "-."]


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> None:
    plt = pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


# ---------------------------------------------------------------- transfer


@dataclass(frozen=True)
class Series:
    """One held-out set's line in the transfer plot."""

    set_name: str
    key: str  # the metric plotted, e.g. test_zh/accuracy
    label: str  # e.g. Mandarin (test_zh)


def transfer_plot(
    by_fraction: dict[float, list[TrialRun]],
    selected: dict[float, TrialRun],
    references: dict[str, TrialRun],
    series: list[Series],
    axis_label: str,
    title: str,
    num_labels: int,
    path: Path,
) -> None:
    """Each series against the mixing share: the selected trial per share joined by a line, the other
    trials as dots, and the reference scenarios (no share) as dashed horizontal lines."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4.6), dpi=100)
    for (colour, marker), line in zip(SERIES_STYLES, series):
        dots = [(f, t.metric(line.key)) for f, ts in by_fraction.items() for t in ts if t.metric(line.key) is not None]
        if dots:
            ax.scatter(*zip(*dots), s=14, color=colour, alpha=0.3, zorder=2)
        chosen = [(f, t.metric(line.key)) for f, t in selected.items() if t.metric(line.key) is not None]
        if chosen:
            ax.plot(*zip(*chosen), marker=marker, color=colour, label=line.label, zorder=3)
    _reference_lines(ax, references, series)
    ax.set_xlabel(axis_label)
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1.02)
    fractions = sorted(by_fraction)
    margin = max(0.05, (fractions[-1] - fractions[0]) * 0.05)
    ax.set_xlim(fractions[0] - margin, fractions[-1] + margin)
    ax.axhline(1 / num_labels, color="gray", linewidth=0.8, linestyle=(0, (1, 3)))
    ax.annotate(
        f"chance ({num_labels} emotions)",
        (0.01, 1 / num_labels),
        xycoords=("axes fraction", "data"),
        xytext=(0, 3),
        textcoords="offset points",
        fontsize=7,
        color="gray",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    save(fig, path)


def _reference_lines(ax, references: dict[str, TrialRun], series: list[Series]) -> None:
    """One horizontal line per reference scenario and series, labelled at the right edge."""
    labels = []
    for i, (scenario, trial) in enumerate(references.items()):
        for (colour, _), line in zip(SERIES_STYLES, series):
            value = trial.metric(line.key)
            if value is None:
                continue
            style = REFERENCE_STYLES[i % len(REFERENCE_STYLES)]
            ax.axhline(value, color=colour, linestyle=style, linewidth=1, alpha=0.8)
            labels.append([value, f"{scenario} ({line.set_name}): {value:.2f}", colour])
    labels.sort()
    for below, above in zip(labels, labels[1:]):  # keep the labels at the right edge from overlapping
        above[0] = max(above[0], below[0] + 0.045)
    for y, text, colour in labels:
        ax.annotate(
            text,
            (1.0, y),
            xycoords=("axes fraction", "data"),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
            color=colour,
        )


# ---------------------------------------------------------------- folds


def fold_plot(configs: dict[str, list[TrialRun]], keys: list[str], metric: str, path: Path) -> None:
    """One panel per metric key: every finished fold of each configuration, and its mean ± std."""
    plt = pyplot()
    names = sorted(configs, key=natural)
    folds = sorted({t.fold for ts in configs.values() for t in ts}, key=natural)
    colours = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(keys), figsize=(max(4.2 * len(keys), 6), 4.2), dpi=100, squeeze=False)
    for ax, key in zip(axes[0], keys):
        labelled: set[str] = set()
        for x, config_id in enumerate(names):
            values = []
            for trial in configs[config_id]:
                value = trial.metric(key) if trial.selectable(metric) else None
                if value is None:
                    continue
                values.append(value)
                k = folds.index(trial.fold)
                offset = (k - (len(folds) - 1) / 2) * min(0.12, 0.6 / len(folds))  # side by side, in fold order
                label = None if trial.fold in labelled else f"fold {trial.fold}"
                ax.scatter(x + offset, value, color=colours(k % 10), s=22, zorder=3, label=label)
                labelled.add(trial.fold)
            if values:
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                ax.errorbar(
                    x, statistics.fmean(values), yerr=spread, fmt="_", color="black", markersize=18, capsize=4, zorder=4
                )
        ax.set_xticks(range(len(names)), names, rotation=20 if len(names) > 4 else 0)
        ax.set_xlim(-0.5, len(names) - 0.5)
        ax.set_ylim(0, 1.02)
        ax.set_title(key)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if unique:
        axes[0][-1].legend(unique.values(), unique.keys(), fontsize=7, loc="lower right")
    fig.tight_layout()
    save(fig, path)


# ---------------------------------------------------------------- knobs


@dataclass(frozen=True)
class KnobAxis:
    """One row of the knob plot: the knob on the x axis, and the other knobs that colour the points."""

    knob: str
    levels: list[str]  # the knob's values, in order
    continuous: bool  # numeric with many values: a continuous axis instead of one tick per level
    others: list[str]
    groups: list[str]  # one colour each: a combination of the other knobs' values

    @classmethod
    def of(cls, trials: list[TrialRun], knob: str, knobs: list[str]) -> KnobAxis:
        levels = sorted({t.params.get(knob, "") for t in trials}, key=_level_order)
        others = [k for k in knobs if k != knob and len({t.params.get(k) for t in trials}) <= MAX_LEVELS]
        if len({_group(t, others) for t in trials}) > 10:
            others = others[:1]
        ordered = sorted(trials, key=lambda t: [_level_order(t.params.get(k, "")) for k in others])
        groups = list(dict.fromkeys(_group(t, others) for t in ordered))
        continuous = _numeric_knob(trials, knob) and len(levels) > MAX_LEVELS
        return cls(knob, levels, continuous, others, groups)

    def x(self, trial: TrialRun) -> float | None:
        raw = trial.params.get(self.knob, "")
        return as_float(raw) if self.continuous else self.levels.index(raw)

    def label(self, group: str) -> str:
        return group.split("=", 1)[1] if len(self.others) == 1 else group or "all trials"


def knob_plot(trials: list[TrialRun], knobs: list[str], keys: list[str], selected: set[str], path: Path) -> None:
    """One row per knob, one column per metric key (a set's accuracy); stars mark the `selected` runs."""
    plt = pyplot()
    fig, axes = plt.subplots(
        len(knobs), len(keys), figsize=(3.5 * len(keys) + 2.6, 3.3 * len(knobs)), dpi=100, squeeze=False
    )
    for row, knob in enumerate(knobs):
        axis = KnobAxis.of(trials, knob, knobs)
        for col, key in enumerate(keys):
            _knob_panel(axes[row][col], trials, axis, key, selected, first_column=col == 0)
        _knob_legend(axes[row], axis.others)
    fig.tight_layout()
    save(fig, path)


def _knob_panel(ax, trials: list[TrialRun], axis: KnobAxis, key: str, selected: set[str], first_column: bool):
    colours = pyplot().get_cmap("tab10")
    for g, group in enumerate(axis.groups):
        points = _knob_points([t for t in trials if _group(t, axis.others) == group], axis, key, selected)
        if points:
            _draw_group(ax, points, axis, colours(g % 10), axis.label(group) if first_column else None)
    _knob_x_axis(ax, trials, axis)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_xlabel(axis.knob)
    if first_column:
        ax.set_ylabel(key.rsplit("/", 1)[-1])
    ax.set_title(key, fontsize=10)


def _knob_points(trials: list[TrialRun], axis: KnobAxis, key: str, selected: set[str]) -> list[tuple]:
    """(x, value, selected) per trial that has both, sorted by x."""
    points = []
    for trial in trials:
        value, x = trial.metric(key), axis.x(trial)
        if value is not None and x is not None:
            points.append((x, value, trial.run_id in selected))
    return sorted(points)


def _draw_group(ax, points: list[tuple], axis: KnobAxis, colour, label: str | None) -> None:
    trend = _trend(points, axis.levels, axis.continuous)
    if len(trend) > 1:
        ax.plot(*zip(*trend), color=colour, alpha=0.6, linewidth=1)
    xs, ys, _ = zip(*points)
    ax.scatter(xs, ys, color=colour, s=26, zorder=3, label=label)
    stars = [(x, y) for x, y, chosen in points if chosen]
    if stars:
        ax.scatter(*zip(*stars), marker="*", s=200, facecolor=colour, edgecolor="black", zorder=4)


def _knob_x_axis(ax, trials: list[TrialRun], axis: KnobAxis) -> None:
    """Log scale for a continuous knob spanning a decade or more; one tick per level otherwise."""
    if axis.continuous:
        values = [v for v in (as_float(t.params.get(axis.knob)) for t in trials) if v is not None]
        if min(values) > 0 and max(values) / min(values) >= 10:
            ax.set_xscale("log")
        return
    levels = axis.levels
    ax.set_xticks(range(len(levels)), [_short_level(v) for v in levels], rotation=20 if len(levels) > 3 else 0)
    ax.set_xlim(-0.5, len(levels) - 0.5)


def _knob_legend(row_axes, others: list[str]) -> None:
    handles, labels = row_axes[0].get_legend_handles_labels()
    if labels:
        row_axes[-1].legend(
            handles,
            labels,
            loc="upper left",
            bbox_to_anchor=(1.03, 1.0),
            fontsize=8,
            title=", ".join(others) or None,
            title_fontsize=8,
            frameon=False,
        )


def _trend(points: list[tuple], levels: list[str], continuous: bool) -> list[tuple[float, float]]:
    """Mean per x over the numeric values of a knob: the line a reader follows (non-numeric levels such
    as 'None' stay single points)."""
    by_x: dict[float, list[float]] = {}
    for x, y, _ in points:
        if continuous or as_float(levels[int(x)]) is not None:
            by_x.setdefault(x, []).append(y)
    return [(x, statistics.fmean(ys)) for x, ys in sorted(by_x.items())]


def _numeric_knob(trials: list[TrialRun], key: str) -> bool:
    raw = {t.params.get(key) for t in trials}
    numbers = {as_float(v) for v in raw} - {None}
    return len(numbers) > 1 and all(as_float(v) is not None or v in ("None", "", None) for v in raw)


def _level_order(raw: str) -> tuple:
    number = as_float(raw)
    return (0, number, "") if number is not None else (1, 0.0, str(raw))


def _short_level(raw: str) -> str:
    return raw if len(raw) <= 14 else raw[:13] + "…"


def _group(trial: TrialRun, knobs: list[str]) -> str:
    return ", ".join(f"{k}={trial.params.get(k, '?')}" for k in knobs)
