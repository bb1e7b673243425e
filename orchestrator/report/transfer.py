"""The section 'Transfer': held-out accuracy against the sweep's mixing knob (transfer against forgetting).

Shown when the sweep declares a mixing knob (`english_fraction`, or `source_fraction` with `mix_source`)
and some finished trial set it to a number. Trials of the sweep without a number for it (zero-shot,
one language only) are the reference lines. The plan names its held-out sets `test_<language>`
(shards.splits): the mixed-in language's own set measures forgetting, every other set transfer.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.document import Figure, Heading, Table, Text
from orchestrator.report import plots
from orchestrator.report.cells import as_float, held_out_sets, num
from orchestrator.report.declaration import Declaration
from orchestrator.results import SweepResults, TrialRun
from workers.vocabulary import Key

TEST_SET_PREFIX = "test_"  # a plan's held-out set of one language: test_<ISO 639 code>
LANGUAGES = {"en": "English", "zh": "Mandarin", "de": "German", "fr": "French", "es": "Spanish", "ja": "Japanese"}


def transfer_section(sweep: SweepResults, declaration: Declaration, out_dir: Path) -> list:
    """Each held-out set's accuracy against the share of the mixed-in language in training."""
    knob = declaration.mixing_knob
    if knob is None:
        return []
    finished = [t for t in sweep.trials if t.selectable(sweep.metric) and t.test_sets]
    curve = [t for t in finished if as_float(t.params.get(knob)) is not None]
    if not curve:
        return []
    source = declaration.mixed_language(curve)
    series = _series(held_out_sets(finished), source)
    references = [t for t in finished if as_float(t.params.get(knob)) is None]
    by_fraction: dict[float, list[TrialRun]] = {}
    for trial in curve:
        by_fraction.setdefault(as_float(trial.params[knob]), []).append(trial)
    selected = {f: sweep.best(ts) for f, ts in sorted(by_fraction.items())}
    reference_best = {
        s: sweep.best([t for t in references if t.scenario == s])
        for s in sorted({t.scenario for t in references}, key=declaration.scenario_key)
    }
    image = f"images/transfer_{knob}.png"
    plots.transfer_plot(
        by_fraction,
        selected,
        reference_best,
        series,
        f"{knob} (share of {_language(source)} clips in training)",
        _title(series, source),
        _num_labels(curve),
        out_dir / image,
    )
    rows = [
        _row(f"{fraction:g}", len(by_fraction[fraction]), trial, sweep, series) for fraction, trial in selected.items()
    ]
    rows += [
        _row(f"{scenario} (reference)", sum(t.scenario == scenario for t in references), trial, sweep, series)
        for scenario, trial in reference_best.items()
    ]
    return [
        Heading(2, _heading(series, source)),
        Text(_explanation(knob, source, series, sweep.metric)),
        Figure([image]),
        Table([knob, "trials", "selected trial", sweep.metric, *[line.key for line in series]], rows),
    ]


def _series(sets: list[str], source: str) -> list[plots.Series]:
    """Every held-out set: those that measure transfer first, then the mixed-in language's own (forgetting)."""
    ordered = sorted(sets, key=lambda s: (_set_language(s) == source, s))
    return [plots.Series(s, Key.of_set(s, Key.ACCURACY), f"{_language(_set_language(s) or s)} ({s})") for s in ordered]


def _row(label: str, count: int, trial: TrialRun, sweep: SweepResults, series: list[plots.Series]) -> list[str]:
    cells = [label, str(count), trial.trial_id, num(trial.metric(sweep.metric), 3)]
    return cells + [num(trial.metric(line.key), 3) for line in series]


def _set_language(set_name: str) -> str | None:
    return set_name.removeprefix(TEST_SET_PREFIX) if set_name.startswith(TEST_SET_PREFIX) else None


def _language(code: str) -> str:
    return LANGUAGES.get(code, code)


def _targets(series: list[plots.Series], source: str) -> list[plots.Series]:
    return [line for line in series if _set_language(line.set_name) != source]


def _heading(series: list[plots.Series], source: str) -> str:
    targets = [_language(_set_language(line.set_name) or line.set_name) for line in _targets(series, source)]
    return f"Transfer to {', '.join(targets)}: {_language(source)} fraction" if targets else "Transfer"


def _title(series: list[plots.Series], source: str) -> str:
    targets = ", ".join(_language(_set_language(line.set_name) or line.set_name) for line in _targets(series, source))
    return f"Transfer ({targets}) against forgetting ({_language(source)})"


def _explanation(knob: str, source: str, series: list[plots.Series], metric: str) -> str:
    sets = " and ".join(f"`{line.set_name}`" for line in series)
    targets = ", ".join(f"`{line.set_name}`" for line in _targets(series, source)) or "the other sets"
    return (
        f"Held-out accuracy on {sets} against `{knob}`, the share of {_language(source)} clips in each "
        f"training epoch. Rising accuracy on {targets} is transfer; falling accuracy on "
        f"`{TEST_SET_PREFIX}{source}` is forgetting. Lines join the selected trial at each fraction (best "
        f"`{metric}`); small dots are the other trials. Runs without a value of `{knob}` "
        "(e.g. zero-shot, one language only) are drawn as dashed reference lines."
    )


def _num_labels(trials: list[TrialRun]) -> int:
    """How many classes the trials tell apart (the chance line); ESD's for runs logged before label sets."""
    from shards.schema import EMOTIONS

    return len(next((t.labels for t in trials if t.labels), EMOTIONS))
