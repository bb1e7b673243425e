"""From a named sweep to the exact list of trials: scenarios x sampled configs x folds.

The driver expands the search space itself (with Tune's own variant generator) rather than
leaving it to Tune, because
- the folds of one configuration must share its sampled values (Tune samples per grid point),
- scenarios tune different knobs (zero-shot tunes nothing), and
- transfer_zh's trials can only start once its base exists.
Tune then runs a grid over these explicit variants: scheduling, resources, retries, resume.
The grid is plain data, stored with the sweep so `--resume` runs exactly the same trials. (A split
plan, `shards.splits.SplitPlan`, is something else: which speakers a trial trains and is tested on.)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace

import numpy as np

from search_spaces import Scenario, SweepSpec
from shards.splits import SplitPlan, emobox_folds, leave_one_speaker_out, paper_plan, transfer_plan
from workers.kinds import FINETUNE, trial_kind
from workers.vocabulary import ConfigKey, Tag

PRETRAIN_PLACEHOLDER = "{pretrain}"  # an init_from value the driver replaces with the base model
FOLD_KINDS = ("loso", "emobox")
# A corpus without the sweep's own speakers (not ESD) takes the first plan of the first family its
# splits.json has, in this order: the release's own partition, then IEMOCAP-style sessions, then folds.
CORPUS_PLAN_ORDER = ("official", "sessions", "folds", "loso")
SEARCH_SEED = 0  # sampled configurations are reproducible; --num-samples draws more


class GridError(ValueError):
    """A sweep that cannot be expanded: unknown key, bad value, a fold that cannot exist."""


@dataclass(frozen=True)
class Variant:
    """One trial: its scenario, its fold (if any), and every config value it runs with (its kind's config)."""

    scenario: str
    values: dict  # canonical keys of its kind's config (aliases resolved), checked by building that config
    fold: str = ""
    config_id: str = ""  # same for every fold of one configuration
    num_folds: int = 0  # folds of its configuration (0: not on folds)
    epochs: int = 0  # the most epochs it reports (ASHA's horizon); 0: not known (a record from before)

    def tags(self) -> dict[str, str]:
        eval_sets = self.values.get(ConfigKey.EVAL_SETS, {})
        tags = {
            Tag.SCENARIO: self.scenario,
            Tag.CONFIG_ID: self.config_id,
            Tag.START: str(self.values.get("start", "")),
            Tag.TRAIN_SPEAKERS: ",".join(self.values.get(ConfigKey.TRAIN_SPEAKERS, ())),
            Tag.TEST_SPEAKERS: ",".join(sorted({s for speakers in eval_sets.values() for s in speakers})),
        }
        if self.fold:
            tags[Tag.FOLD] = self.fold
            tags[Tag.NUM_FOLDS] = str(self.num_folds)
        return tags

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Variant:
        return cls(
            values["scenario"],
            values["values"],
            values.get("fold", ""),
            values.get("config_id", ""),
            values.get("num_folds", 0),
            values.get("epochs", 0),
        )


@dataclass(frozen=True)
class Phase:
    name: str  # 'pretrain' (transfer_zh's base) or 'main'
    variants: tuple[Variant, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "variants": [v.to_dict() for v in self.variants]}

    @classmethod
    def from_dict(cls, values: dict) -> Phase:
        return cls(values["name"], tuple(Variant.from_dict(v) for v in values["variants"]))


@dataclass(frozen=True)
class TrialGrid:
    sweep: str
    metric: str
    mode: str
    phases: tuple[Phase, ...]
    folds: str = ""
    tuned: tuple[str, ...] = ()  # searched keys whose values differ between trials (progress, tables)
    kind: str = FINETUNE  # what every trial runs (workers.kinds)
    plan: str = ""  # which split plan the trials train and test on, in words (the sweep's first line)

    @property
    def num_trials(self) -> int:
        return sum(len(p.variants) for p in self.phases)

    def to_dict(self) -> dict:
        return {**asdict(self), "phases": [p.to_dict() for p in self.phases]}

    @classmethod
    def from_dict(cls, values: dict) -> TrialGrid:
        return cls(
            values["sweep"],
            values["metric"],
            values["mode"],
            tuple(Phase.from_dict(p) for p in values["phases"]),
            values.get("folds", ""),
            tuple(values.get("tuned", ())),
            values.get("kind", FINETUNE),
            values.get("plan", ""),
        )


def build_grid(
    spec: SweepSpec,
    speakers: dict[str, dict],
    *,
    place: dict | None = None,
    folds: str | None = None,
    init_from: str | None = None,
    num_samples: int | None = None,
    explicit_speakers: bool = False,
    stored_plans: dict[str, list[SplitPlan]] | None = None,
) -> TrialGrid:
    """Every trial of `spec` (preset and --set already applied) on a corpus with `speakers`.

    `place`: values every trial gets but that are not part of the recipe (data_dir, num_threads).
    `explicit_speakers`: the user set train_speakers/eval_sets, so no named plan replaces them.
    `stored_plans`: the corpus's own split plans (splits.json), used when the sweep's speakers are not
    the corpus's.
    """
    spec = canonical_spec(spec)
    if init_from and spec.kind != FINETUNE:
        raise GridError(f"--init-from starts a fine-tuning trial from a model; a {spec.kind!r} sweep has none")
    if folds and explicit_speakers:
        raise GridError("--folds chooses the speakers of every trial; drop --set train_speakers/eval_sets")
    default = default_split(spec, speakers, explicit_speakers, stored_plans)
    splits = fold_splits(folds, default, spec.fold_language, speakers) if folds else [default]
    phases = []
    if spec.pretrain is not None and not init_from:
        # One base for every fold: the folds rotate the transfer target, not the base's speakers.
        phases.append(Phase("pretrain", (expand_base(spec, default, speakers, place),)))
    main = []
    for scenario in spec.all_scenarios():
        main.extend(expand_scenario(spec, scenario, splits, speakers, place, num_samples, folded=bool(folds)))
    if init_from:
        main = [_with_init_from(v, init_from, spec.pretrain is not None) for v in main]
    phases.append(Phase("main", tuple(main)))
    searched = set(spec.space).union(*(s.space for s in spec.all_scenarios()))
    variants = [v for p in phases for v in p.variants]
    tuned = tuple(k for k in _varying_keys(variants) if k in searched)
    return TrialGrid(
        spec.name, spec.metric, spec.mode, tuple(phases), folds or "", tuned, spec.kind, describe_plan(default)
    )


def canonical_spec(spec: SweepSpec) -> SweepSpec:
    """The sweep with every key it names (base, space, scenarios, points) as its kind's config field
    (aliases resolved); GridError naming the closest key. Idempotent: the driver applies it before
    `--set` (whose keys come canonical from `orchestrator.sweep.parse_overrides`), so a `--set` key
    replaces the sweep's value given under an alias; `build_grid` applies it to whatever spec it gets."""
    kind = _kind(spec)

    def renamed(values: dict) -> dict:
        try:
            return kind.canonical(values)
        except ValueError as error:
            raise GridError(f"sweep {spec.name!r}: {error}") from None

    def scenario_renamed(scenario: Scenario | None) -> Scenario | None:
        if scenario is None:
            return None
        points = tuple(renamed(p) for p in scenario.points)
        return replace(scenario, values=renamed(scenario.values), space=renamed(scenario.space), points=points)

    return replace(
        spec,
        base=renamed(spec.base),
        space=renamed(spec.space),
        scenarios=tuple(scenario_renamed(s) for s in spec.scenarios),
        pretrain=scenario_renamed(spec.pretrain),
    )


def _kind(spec: SweepSpec):
    try:
        return trial_kind(spec.kind)
    except ValueError as error:
        raise GridError(f"sweep {spec.name!r}: {error}") from None


def default_split(
    spec: SweepSpec, speakers: dict[str, dict], explicit: bool, stored_plans: dict[str, list[SplitPlan]] | None = None
) -> SplitPlan:
    """The sweep's named plan on this corpus, or the speakers its base names, or (a corpus without
    them, not set by the user) the corpus's own first stored plan (`CORPUS_PLAN_ORDER`)."""
    if spec.plan and not explicit:
        builders = {"paper": paper_plan, "transfer": transfer_plan}
        if spec.plan not in builders:
            raise GridError(f"sweep {spec.name!r} names unknown plan {spec.plan!r}; known: {', '.join(builders)}")
        try:
            return builders[spec.plan](speakers)
        except ValueError as error:
            raise GridError(f"sweep {spec.name!r}: {error}") from None
    defaults = _kind(spec).config()
    base = SplitPlan(
        "base",
        tuple(spec.base.get(ConfigKey.TRAIN_SPEAKERS, defaults.train_speakers)),
        {k: tuple(v) for k, v in spec.base.get(ConfigKey.EVAL_SETS, defaults.eval_sets).items()},
    )
    named = {*base.train_speakers, *(s for group in base.eval_sets.values() for s in group)}
    if explicit or named <= set(speakers):
        return base
    return corpus_default_plan(spec, speakers, stored_plans or {}, sorted(named - set(speakers)))


def corpus_default_plan(
    spec: SweepSpec, speakers: dict[str, dict], stored: dict[str, list[SplitPlan]], missing: list[str]
) -> SplitPlan:
    for family in CORPUS_PLAN_ORDER:
        if stored.get(family):
            plan = stored[family][0]
            return SplitPlan(f"{family}:{plan.name}", plan.train_speakers, dict(plan.eval_sets))
    raise GridError(
        f"sweep {spec.name!r} names speakers {missing[:5]} the corpus lacks, and the corpus has no split plan of "
        f"{', '.join(CORPUS_PLAN_ORDER)} (splits.json); set --set train_speakers=[...] --set eval_sets={{...}}"
    )


def describe_plan(plan: SplitPlan) -> str:
    """'plan folds:fold-1 (the corpus's splits.json): trains 8 speakers; test_en 2' for the sweep's first line."""
    family, _, name = plan.name.partition(":")
    origin = f"plan {family}:{name} (the corpus's splits.json)" if name else f"plan {plan.name!r}"
    held_out = ", ".join(f"{k} {len(v)}" for k, v in plan.eval_sets.items())
    return f"{origin}: trains {len(plan.train_speakers)} speaker(s); held out {held_out}"


def fold_splits(kind: str, default: SplitPlan, language: str, speakers: dict[str, dict]) -> list[SplitPlan]:
    """The default plan with `language`'s speakers rotated by each fold; other languages stay as planned."""
    if kind not in FOLD_KINDS:
        raise GridError(f"unknown --folds {kind!r}; choose one of {', '.join(FOLD_KINDS)}")
    folds = leave_one_speaker_out(speakers, language) if kind == "loso" else emobox_folds(speakers)
    merged = [merge_fold(default, fold, language, speakers) for fold in folds]
    merged = [m for m in merged if m is not None]
    if not merged:
        raise GridError(f"--folds {kind}: no fold holds out a {language!r} speaker of this corpus")
    return merged


def merge_fold(default: SplitPlan, fold: SplitPlan, language: str, speakers: dict[str, dict]) -> SplitPlan | None:
    def lang(s: str) -> str:
        return speakers[s]["language"]

    held_out = tuple(s for group in fold.eval_sets.values() for s in group if lang(s) == language)
    if not held_out:
        return None
    train = tuple(s for s in default.train_speakers if lang(s) != language)
    train += tuple(s for s in fold.train_speakers if lang(s) == language)
    eval_sets = {name: group for name, group in default.eval_sets.items() if name != f"test_{language}"}
    eval_sets[f"test_{language}"] = held_out
    return SplitPlan(fold.name, train, eval_sets)


def expand_base(spec: SweepSpec, split: SplitPlan, speakers: dict[str, dict], place: dict | None) -> Variant:
    """The pretrain trial: the sweep's base with its pretrain scenario's values, nothing tuned, one split."""
    config = _fixed_values(spec, spec.pretrain)
    return _variant(spec, spec.pretrain, config, split, speakers, place, fold="")


def expand_scenario(
    spec: SweepSpec,
    scenario: Scenario,
    splits: list[SplitPlan],
    speakers: dict[str, dict],
    place: dict | None,
    num_samples: int | None,
    folded: bool,
) -> tuple[Variant, ...]:
    """The scenario's configurations (sampled and explicit points), each on every split (a fold when `folded`).

    Configurations that come out equal (a point that a preset reduced to the sampled values)
    run once.
    """
    fixed = _fixed_values(spec, scenario)
    space = {**spec.space, **scenario.space}
    samples = scenario.num_samples or num_samples or spec.num_samples
    configs = [{**fixed, **c} for c in sample_space(space, samples)]
    for point in scenario.points:
        missing = sorted(set(space) - set(point))
        if missing:
            raise GridError(f"scenario {scenario.name!r}: point {point} lacks tuned key(s) {missing}")
        configs.append({**fixed, **point})
    variants: dict[tuple[str, str], Variant] = {}
    for config in configs:
        for split in splits:
            fold = split.name if folded else ""
            variant = _variant(spec, scenario, config, split, speakers, place, fold, len(splits) if folded else 0)
            variants.setdefault((variant.config_id, variant.fold), variant)
    return tuple(variants.values())


def _fixed_values(spec: SweepSpec, scenario: Scenario) -> dict:
    return {k: v for k, v in {**spec.base, **scenario.values}.items() if k not in ConfigKey.PLAN}


def _variant(
    spec: SweepSpec,
    scenario: Scenario,
    config: dict,
    split: SplitPlan,
    speakers: dict[str, dict],
    place: dict | None,
    fold: str,
    num_folds: int = 0,
) -> Variant:
    values = {**config, **split_values(split, scenario, spec.test_sets, speakers), **(place or {})}
    kind = _kind(spec)
    cfg = typed_config(scenario.name, values, kind)  # the one build of the trial's config on the driver
    if spec.kind == FINETUNE:
        check_mixing(scenario.name, cfg, speakers)
    config_id = config_hash(scenario.name, config)
    return Variant(scenario.name, values, fold, config_id, num_folds, kind.max_epochs(cfg))


def sample_space(space: dict, num_samples: int) -> list[dict]:
    """Tune's own expansion: grid points x num_samples, random domains drawn (seeded, rounded)."""
    from ray.tune.search.variant_generator import generate_variants

    if not space:
        return [{}]
    rng = np.random.RandomState(SEARCH_SEED)
    configs = []
    for _ in range(num_samples):
        for _resolved, config in generate_variants(dict(space), random_state=rng):
            configs.append({k: _round(v) for k, v in config.items()})
    return configs


def split_values(split: SplitPlan, scenario: Scenario, test_sets: tuple[str, ...], speakers: dict[str, dict]) -> dict:
    train = split.train_speakers
    if scenario.train_languages is not None:
        train = tuple(s for s in train if speakers.get(s, {}).get("language") in scenario.train_languages)
    if not train:
        raise GridError(
            f"scenario {scenario.name!r}: plan {split.name!r} has no training speaker in {scenario.train_languages}"
        )
    eval_sets = {k: v for k, v in split.eval_sets.items() if not test_sets or k in test_sets}
    return {ConfigKey.TRAIN_SPEAKERS: train, ConfigKey.EVAL_SETS: eval_sets}


def config_hash(scenario: str, config: dict) -> str:
    recipe = {k: v for k, v in config.items() if k not in (*ConfigKey.PLAN, *ConfigKey.PLACE)}
    text = json.dumps({"scenario": scenario, **recipe}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def typed_config(scenario: str, values: dict, kind):
    """The trial's typed config (its kind's); GridError naming the scenario and the bad key or value."""
    try:
        return kind.config_from(values)
    except (ValueError, TypeError) as error:
        raise GridError(f"invalid config in scenario {scenario!r}: {error}") from None


def check_mixing(scenario: str, cfg, speakers: dict[str, dict]) -> None:
    """A mixed trial needs its source language and another one among its training speakers."""
    source, fraction = cfg.mixing()
    if fraction is None:
        return
    languages = {speakers.get(s, {}).get("language") for s in cfg.train_speakers}
    needs_source, needs_other = fraction > 0, fraction < 1
    if (needs_source and source not in languages) or (needs_other and not languages - {source}):
        raise GridError(
            f"scenario {scenario!r}: mixing {source!r} at {fraction} needs {source!r} and another language among "
            f"the training speakers, whose languages are {sorted(x for x in languages if x)}"
        )


def fill_init_from(phase: Phase, model: str) -> Phase:
    """The phase with the base model in place of the pretrain placeholder (after the pretrain phase)."""
    return Phase(phase.name, tuple(_with_init_from(v, model, True) for v in phase.variants))


def _with_init_from(variant: Variant, model: str, only_placeholder: bool) -> Variant:
    current = variant.values.get("init_from", "")
    if only_placeholder and current != PRETRAIN_PLACEHOLDER:
        return variant
    return replace(variant, values={**variant.values, "init_from": model})


def _varying_keys(variants: list[Variant]) -> list[str]:
    keys: list[str] = []
    for key in sorted({k for v in variants for k in v.values}):
        seen = {json.dumps(v.values.get(key), sort_keys=True, default=str) for v in variants}
        if len(seen) > 1:
            keys.append(key)
    return keys


def _round(value):
    """Sampled floats to 3 significant digits (1.2345e-4 -> 0.000123): readable, and no 0.8500000000000001."""
    if isinstance(value, float):
        return float(f"{value:.3g}")
    if isinstance(value, np.floating):
        return float(f"{float(value):.3g}")
    if isinstance(value, np.integer):
        return int(value)
    return value
