"""Named sweeps: one small declarative module each, exposing `SWEEP: SweepSpec`.

`python -m orchestrator.sweep NAME` loads `search_spaces.NAME`. A sweep is data: fixed values, a
Tune search space, the scenarios it compares (in the order it reports them), the knob that mixes
languages (if any), the split plan it trains and tests on, and presets.
A preset is either a dict of overrides or a function from the spec to a new spec (torchtitan's
"a named config starts from a base and changes a few fields"); see `SweepSpec.override`.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field

from workers.vocabulary import Task


@dataclass(frozen=True)
class Scenario:
    """One arm of a comparison (e.g. finer vs vanilla): its fixed values and what it tunes."""

    name: str  # the MLflow `scenario` tag
    values: dict = field(default_factory=dict)  # TrialConfig values of this scenario
    space: dict = field(default_factory=dict)  # Tune domains tuned only here (beside SweepSpec.space)
    # Languages of the plan's training speakers this scenario trains on (None: all of them).
    train_languages: tuple[str, ...] | None = None
    points: tuple[dict, ...] = ()  # explicit configurations run besides the sampled ones (e.g. the paper's)
    num_samples: int | None = None  # samples of this scenario's space (None: the sweep's)


Preset = dict | Callable[["SweepSpec"], "SweepSpec"]
# Config keys that mix languages in training (workers.finetune.config.TrialConfig.mixing), and whose share each
# sets: the English share (the paper's instance), or the share of the trial's `mix_source` (None here).
MIXING_KNOBS: dict[str, str | None] = {"english_fraction": "en", "source_fraction": None}
MIX_SOURCE = "mix_source"  # the config key naming the language source_fraction mixes


@dataclass(frozen=True)
class SweepSpec:
    """A named sweep: fixed config values, the Tune search space over the rest, and how to rank trials."""

    name: str
    description: str
    base: dict  # TrialConfig values shared by every trial
    space: dict  # TrialConfig field -> Tune domain (tune.grid_search, tune.loguniform, ...)
    metric: str = "val/accuracy"  # ranks trials; held-out test sets are reported, never tuned on
    mode: str = "max"
    # What ranks trials once `task` is set to 'dimensions' (by a preset or --set): the mean CCC over the
    # dimensions on the validation clips, unless the sweep says otherwise here.
    dimension_metric: str = "val/ccc"
    num_samples: int = 1
    presets: dict[str, Preset] = field(default_factory=dict)  # e.g. "tiny": overrides for CPU runs
    default_preset: str | None = None  # applied when no --preset is given
    # Arms compared within the sweep; none: one scenario named after the sweep.
    scenarios: tuple[Scenario, ...] = ()
    # Trained once before the scenarios; every scenario trial starts from its model (`init_from`).
    # Skipped when the driver is given --init-from.
    pretrain: Scenario | None = None
    # Named split plan from the corpus's speakers ('paper', 'transfer'; shards.splits); None: the
    # base's own train_speakers and eval_sets.
    plan: str | None = None
    test_sets: tuple[str, ...] = ()  # keep only these held-out sets of the plan (empty: all)
    fold_language: str = "en"  # whose speakers rotate under --folds
    # What each trial runs (workers.kinds): 'finetune' (the recipe, TrialConfig), 'features'
    # (openSMILE + classifier, FeaturesConfig) or 'text' (transcripts, TextConfig); keys are of that config.
    kind: str = "finetune"
    # The config key that sets one language's share of each training epoch ('english_fraction', or
    # 'source_fraction' with `mix_source`), whose values the report plots held-out accuracy against
    # (its transfer section). None: the sweep does not mix languages.
    mixing_knob: str | None = None

    def __post_init__(self) -> None:
        if self.mixing_knob not in (None, *MIXING_KNOBS):
            raise ValueError(
                f"sweep {self.name!r}: mixing_knob {self.mixing_knob!r} is not one of {tuple(MIXING_KNOBS)} (or None)"
            )

    def all_scenarios(self) -> tuple[Scenario, ...]:
        return self.scenarios or (Scenario(self.name),)

    def scenario_order(self) -> tuple[str, ...]:
        """Every scenario's name in the order the sweep runs and reports them: the pretrain base first."""
        return tuple(s.name for s in (*([self.pretrain] if self.pretrain else []), *self.all_scenarios()))

    def replace(self, **changes) -> SweepSpec:
        return dataclasses.replace(self, **changes)

    def override(self, values: dict) -> SweepSpec:
        """The same sweep with `values` applied to every trial (presets and --set).

        A plain value fixes the field for every scenario (and stops tuning it); a Tune domain
        (e.g. tune.grid_search([...])) becomes the sweep-wide search space for the field.
        """
        fixed = {k: v for k, v in values.items() if not _is_domain(v)}
        tuned = {k: v for k, v in values.items() if _is_domain(v)}
        touched = set(values)

        def strip(scenario: Scenario | None) -> Scenario | None:
            if scenario is None:
                return None
            return dataclasses.replace(
                scenario,
                values=_without(scenario.values, touched),
                space=_without(scenario.space, touched),
                # A point keeps its own value for a key that is still tuned, not for a fixed one.
                points=tuple(_without(p, set(fixed)) for p in scenario.points),
            )

        ranking = {}
        if fixed.get(Task.KEY) == Task.DIMENSIONS:  # a dimensional sweep ranks by CCC (higher is better)
            ranking = {"metric": self.dimension_metric, "mode": "max"}
        return dataclasses.replace(
            self,
            **ranking,
            base={**_without(self.base, tuned), **fixed},
            space={**_without(self.space, touched), **tuned},
            scenarios=tuple(strip(s) for s in self.scenarios),
            pretrain=strip(self.pretrain),
        )

    def with_preset(self, name: str | None) -> SweepSpec:
        name = name or self.default_preset
        if name is None:
            return self
        if name not in self.presets:
            raise ValueError(
                f"sweep {self.name!r} has no preset {name!r}; presets: {', '.join(self.presets) or 'none'}"
            )
        preset = self.presets[name]
        return preset(self) if callable(preset) else self.override(preset)

    def keys(self) -> set[str]:
        """Every config key the sweep names (for validation against its kind's config)."""
        keys = set(self.base) | set(self.space)
        for scenario in (*self.scenarios, *([self.pretrain] if self.pretrain else [])):
            keys |= set(scenario.values) | set(scenario.space)
            for point in scenario.points:
                keys |= set(point)
        return keys


def _is_domain(value) -> bool:
    from ray.tune.search.sample import Domain

    return isinstance(value, Domain) or (isinstance(value, dict) and set(value) == {"grid_search"})


def _without(values: dict, keys: set[str]) -> dict:
    return {k: v for k, v in values.items() if k not in keys}


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def load(name: str) -> SweepSpec:
    if name not in available():
        raise ValueError(f"no sweep named {name!r}; available: {', '.join(available())}")
    return importlib.import_module(f"{__name__}.{name}").SWEEP
