"""What a sweep declares about itself, as the report needs it: its scenarios in order, its mixing knob.

The driver writes both on the parent run at sweep start (`SweepTag.SCENARIOS`, `SweepTag.MIXING_KNOB`,
from `search_spaces.SweepSpec`), so the report needs no sweep's name and no sweep's module. Parent
runs from before those tags get both read off their trial runs instead: scenarios in the order the
sweep first ran them, and the first mixing knob some trial set to a number.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from orchestrator.report.cells import as_float
from orchestrator.results import SweepResults, TrialRun
from search_spaces import MIX_SOURCE, MIXING_KNOBS
from workers.vocabulary import SweepTag


@dataclass(frozen=True)
class Declaration:
    scenarios: tuple[str, ...]  # in the order the sweep reports them
    mixing_knob: str | None  # the config key that sets one language's share of training (None: no mixing)

    @classmethod
    def of(cls, sweep: SweepResults) -> Declaration:
        tags = sweep.parent_tags
        scenarios = tuple(name for name in tags.get(SweepTag.SCENARIOS, "").split(",") if name)
        if SweepTag.MIXING_KNOB in tags:
            knob = tags[SweepTag.MIXING_KNOB] or None
        else:
            knob = _mixing_knob_of(sweep.trials)
        return cls(scenarios or _scenarios_as_run(sweep.trials), knob)

    def scenario_key(self, scenario: str) -> tuple:
        """Sort key: the declared order, then scenarios the declaration lacks, by name."""
        declared = self.scenarios.index(scenario) if scenario in self.scenarios else len(self.scenarios)
        return (declared, scenario)

    def mixed_language(self, trials: list[TrialRun]) -> str:
        """The language whose share the mixing knob sets (the trials' `mix_source` for source_fraction)."""
        fixed = MIXING_KNOBS.get(self.mixing_knob or "")
        if fixed:
            return fixed
        named = Counter(t.params[MIX_SOURCE] for t in trials if t.params.get(MIX_SOURCE))
        return named.most_common(1)[0][0] if named else "?"


def _scenarios_as_run(trials: list[TrialRun]) -> tuple[str, ...]:
    """Scenarios by their first trial's start: a sweep starts its trials in the order it declares them."""
    first: dict[str, float] = {}
    for trial in trials:
        started = trial.start_time if trial.start_time is not None else float("inf")
        first[trial.scenario] = min(first.get(trial.scenario, started), started)
    return tuple(sorted(first, key=lambda scenario: (first[scenario], scenario)))


def _mixing_knob_of(trials: list[TrialRun]) -> str | None:
    for knob in MIXING_KNOBS:
        if any(as_float(t.params.get(knob)) is not None for t in trials):
            return knob
    return None
