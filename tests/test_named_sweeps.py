"""Named sweeps as plans: every sweep loads, its presets plan on the demo speakers, folds and
scenarios expand into the trials the paper's experiments need. No Ray here; see test_driver.py."""

from types import SimpleNamespace

import pytest
from ray import tune

import search_spaces
from orchestrator import sweep
from orchestrator.grid import PRETRAIN_PLACEHOLDER
from orchestrator.grid import GridError as PlanError
from orchestrator.grid import build_grid as build_plan
from orchestrator.results import best_per_scenario, encoder_rows, fold_rows, varies_start
from shards.demo import DEMO_SPEAKERS
from shards.splits import SpeakerLeakError
from workers.finetune import encoders
from workers.finetune.config import START_MODELS, TrialConfig
from workers.finetune.model import CONFIG_STARTS
from workers.kinds import trial_kind

PLACE = {"data_dir": "/data", "num_threads": 1}


def plan_of(name, preset=None, overrides=None, **kwargs):
    spec = search_spaces.load(name).with_preset(preset).override(overrides or {})
    return build_plan(spec, DEMO_SPEAKERS, place=PLACE, **kwargs)


def language(speaker):
    return DEMO_SPEAKERS[speaker]["language"]


@pytest.mark.parametrize("name", search_spaces.available())
def test_every_named_sweep_loads_and_plans_with_each_preset(name):
    spec = search_spaces.load(name)
    assert spec.name == name and spec.description
    kind = trial_kind(spec.kind)  # the config its trials run with
    for preset in [None, *spec.presets]:
        plan = plan_of(name, preset)
        assert plan.num_trials >= 1 and plan.kind == spec.kind
        for phase in plan.phases:
            for variant in phase.variants:
                values = {**variant.values, "init_from": ""} if "init_from" in variant.values else variant.values
                config = kind.config_from(values)
                held_out = {s for group in config.eval_sets.values() for s in group}
                assert not held_out & set(config.train_speakers)
    tiny = plan_of(name, "tiny")
    assert tiny.num_trials <= 8  # runs on 2 CPU cores in minutes
    model = {"finetune": "start", "text": "encoder"}.get(spec.kind)  # features: no model to shrink
    # Every tiny start is a random config built offline (the encoders sweep has one per family).
    if model == "start":
        assert all(v.values["start"] in CONFIG_STARTS for p in tiny.phases for v in p.variants)
    elif model is not None:
        assert all(v.values[model] == "tiny" for p in tiny.phases for v in p.variants)


def test_features_sweep_crosses_each_classifier_with_its_own_knobs():
    plan = plan_of("features")
    assert plan.kind == "features"
    by_classifier = {}
    for variant in plan.phases[-1].variants:
        assert variant.scenario == variant.values["classifier"]
        by_classifier.setdefault(variant.scenario, []).append(variant.values)
    assert sorted(by_classifier) == ["logreg", "mlp", "svm"]
    assert len({v["C"] for v in by_classifier["logreg"]}) == 3 and len({v["C"] for v in by_classifier["svm"]}) == 3
    assert {(tuple(v["hidden_sizes"]), v["alpha"]) for v in by_classifier["mlp"]} == {
        ((64,), 1e-3),
        ((64,), 1e-1),
        ((128, 64), 1e-3),
        ((128, 64), 1e-1),
    }
    assert plan.phases[-1].variants[0].values["eval_sets"] == {"test_en": ("0015",), "test_zh": ("0002",)}


def test_baseline_sweeps_validate_keys_against_their_own_config():
    with pytest.raises(PlanError, match="unknown FeaturesConfig key 'learning_rate'"):
        plan_of("features", overrides={"learning_rate": 1e-3})
    with pytest.raises(PlanError, match="did you mean 'alpha'"):
        plan_of("features", overrides={"alpah": 0.1})
    with pytest.raises(PlanError, match="classifier 'forest'"):
        plan_of("features", overrides={"classifier": "forest"})
    with pytest.raises(PlanError, match="unknown TextConfig key 'start'"):
        plan_of("text", "tiny", overrides={"start": "tiny"})
    with pytest.raises(PlanError, match="--init-from"):
        plan_of("features", init_from="/models/base")


def test_encoders_tunes_each_encoder_and_its_tiny_preset_covers_every_family():
    full = plan_of("encoders")
    by_scenario: dict[str, list] = {}
    for variant in (v for p in full.phases for v in p.variants):
        by_scenario.setdefault(variant.scenario, []).append(variant.values)
    for scenario in ("fine_tune", "lora"):
        starts = {values["start"] for values in by_scenario[scenario]}
        assert starts == set(START_MODELS) - {"finer", "vanilla"}
        for start in starts:  # the learning rate is tuned per encoder, not shared
            assert len({values["learning_rate"] for values in by_scenario[scenario] if values["start"] == start}) > 1
    assert {v["schedule"] for v in by_scenario["fine_tune"]} == {"paper_finer", "full"}
    assert {v["schedule"] for v in by_scenario["lora"]} == {"lora"}
    assert all(v["eval_sets"].keys() == {"test_en"} for vs in by_scenario.values() for v in vs)
    tiny = plan_of("encoders", "tiny")
    families = {
        encoders.family_of(CONFIG_STARTS[v.values["start"]]()).model_type
        for v in (v for p in tiny.phases for v in p.variants)
    }
    assert families == set(encoders.SUPPORTED_MODEL_TYPES)
    assert [v.values["schedule"] for v in (v for p in tiny.phases for v in p.variants) if v.scenario == "lora"] == [
        "lora"
    ]


def test_list_shows_every_sweep_and_its_presets(capsys):
    assert sweep.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in search_spaces.available():
        assert name in out
    assert "presets: tiny" in out


def test_finer_vs_vanilla_tunes_both_starts_on_the_held_out_english_speaker():
    plan = plan_of("finer_vs_vanilla")
    variants = plan.phases[-1].variants
    assert {v.scenario for v in variants} == {"finer", "vanilla"}
    assert {v.values["start"] for v in variants if v.scenario == "finer"} == {"finer"}
    assert {v.values["schedule"] for v in variants} == {"paper_finer", "paper_vanilla", "full"}
    assert len({v.values["learning_rate"] for v in variants}) > 2  # sampled, not fixed
    # The paper's own recipe runs as a point of each arm.
    assert any(
        v.values["learning_rate"] == 1e-4 and v.values["schedule"] == "paper_vanilla"
        for v in variants
        if v.scenario == "vanilla"
    )
    for variant in variants:
        assert variant.values["train_speakers"] == ("0011", "0012", "0013", "0014")
        assert variant.values["eval_sets"] == {"test_en": ("0015",)}
    assert set(plan.tuned) >= {"learning_rate", "batch_size", "schedule"}


def test_transfer_zh_fans_out_from_one_base():
    plan = plan_of("transfer_zh", "tiny")
    assert [p.name for p in plan.phases] == ["pretrain", "main"]
    (base,) = plan.phases[0].variants
    assert base.scenario == "base"
    assert {language(s) for s in base.values["train_speakers"]} == {"en"}
    by_scenario = {}
    for variant in plan.phases[1].variants:
        by_scenario.setdefault(variant.scenario, []).append(variant)
        assert variant.values["init_from"] == PRETRAIN_PLACEHOLDER
        assert variant.values["eval_sets"] == {"test_zh": ("0002",), "test_en": ("0015",)}
    assert [v.values["evaluate_only"] for v in by_scenario["zero_shot"]] == [True]
    assert {language(s) for v in by_scenario["zh_only"] for s in v.values["train_speakers"]} == {"zh"}
    assert sorted(v.values["english_fraction"] for v in by_scenario["mixed"]) == [0.25, 0.5, 0.75]
    assert {language(s) for s in by_scenario["mixed"][0].values["train_speakers"]} == {"en", "zh"}
    assert TrialConfig.from_dict({**by_scenario["zero_shot"][0].values, "init_from": ""}).stage_list() == []


def test_transfer_zh_paper_scale_tunes_lr_batch_schedule_and_the_english_share():
    plan = plan_of("transfer_zh")
    (base,) = plan.phases[0].variants  # the paper's finer recipe
    assert {k: base.values[k] for k in ("start", "schedule", "learning_rate", "batch_size")} == {
        "start": "finer",
        "schedule": "paper_finer",
        "learning_rate": 1e-4,
        "batch_size": 8,
    }
    mixed = [v for v in plan.phases[1].variants if v.scenario == "mixed"]
    assert {v.values["english_fraction"] for v in mixed} == {0.2, 0.4, 0.6, 0.8, None}
    assert {v.values["schedule"] for v in mixed} == {"full", "paper_finer", "head_only"}
    assert len({v.values["batch_size"] for v in mixed}) == 2


def test_init_from_skips_the_pretrain_phase():
    plan = plan_of("transfer_zh", "tiny", init_from="runs:/abc/model")
    assert [p.name for p in plan.phases] == ["main"]
    assert {v.values["init_from"] for v in plan.phases[0].variants} == {"runs:/abc/model"}


def test_loso_folds_share_each_configuration_and_never_leak_a_speaker():
    plan = plan_of("finer_vs_vanilla", "tiny", folds="loso")
    variants = plan.phases[0].variants
    english = [s for s in DEMO_SPEAKERS if language(s) == "en"]
    by_config = {}
    for variant in variants:
        by_config.setdefault(variant.config_id, []).append(variant)
        (held_out,) = variant.values["eval_sets"]["test_en"]
        assert variant.fold == f"loso-{held_out}"
        assert set(variant.values["train_speakers"]) == set(english) - {held_out}
    assert len(by_config) == 4 and all(len(folds) == len(english) for folds in by_config.values())
    for folds in by_config.values():  # a configuration's folds differ only in their speakers
        recipes = {
            tuple(sorted((k, str(v)) for k, v in f.values.items() if k not in ("train_speakers", "eval_sets")))
            for f in folds
        }
        assert len(recipes) == 1


def test_transfer_folds_rotate_the_mandarin_speakers_and_keep_the_english_test():
    plan = plan_of("transfer_zh", "tiny", folds="loso")
    zh_only = [v for v in plan.phases[1].variants if v.scenario == "zh_only"]
    assert sorted(v.values["eval_sets"]["test_zh"] for v in zh_only) == [("0001",), ("0002",), ("0003",)]
    assert all(v.values["eval_sets"]["test_en"] == ("0015",) for v in zh_only)
    assert len(plan.phases[0].variants) == 1  # one base for every fold


def test_emobox_folds_keep_only_folds_that_test_the_fold_language():
    plan = plan_of("smoke", folds="emobox")
    assert {v.fold for v in plan.phases[0].variants} == {"emobox-1", "emobox-2", "emobox-4"}


def test_set_fixes_a_tuned_key_for_every_trial():
    plan = plan_of("smoke", overrides={"schedule": "full"})
    assert {v.values["schedule"] for v in plan.phases[0].variants} == {"full"}
    assert len(plan.phases[0].variants) == 2 and "schedule" not in plan.tuned


def test_a_preset_domain_retunes_a_key():
    spec = search_spaces.load("smoke").override({"learning_rate": tune.grid_search([1e-3, 2e-3, 3e-3])})
    plan = build_plan(spec, DEMO_SPEAKERS, place=PLACE)
    assert {v.values["learning_rate"] for v in plan.phases[0].variants} == {1e-3, 2e-3, 3e-3}


def test_unknown_keys_and_bad_values_are_clear_errors():
    with pytest.raises(PlanError, match="unknown config key 'lr'"):
        plan_of("smoke", overrides={"lr": 1})
    with pytest.raises(PlanError, match="english_fraction"):
        plan_of("smoke", overrides={"english_fraction": 2.0})
    with pytest.raises(SpeakerLeakError):
        plan_of("smoke", overrides={"train_speakers": ("0015",)}, explicit_speakers=True)
    with pytest.raises(PlanError, match="--folds chooses the speakers"):
        plan_of("smoke", overrides={"train_speakers": ("0011",)}, explicit_speakers=True, folds="loso")
    with pytest.raises(ValueError, match="no preset 'huge'"):
        search_spaces.load("smoke").with_preset("huge")


def _run(config_id, fold, scenario, metrics, status="FINISHED"):
    tags = {"config_id": config_id, "fold": fold, "scenario": scenario, "trial_id": f"{config_id}-{fold}"}
    return SimpleNamespace(
        info=SimpleNamespace(status=status, run_id=f"{config_id}{fold}"),
        data=SimpleNamespace(tags=tags, metrics=metrics, params={}),
    )


def test_fold_rows_give_mean_and_sample_std_per_configuration():
    runs = [
        _run("a", "f1", "finer", {"test_en/accuracy": 0.5, "test_en/macro_f1": 0.4, "val/accuracy": 0.9}),
        _run("a", "f2", "finer", {"test_en/accuracy": 0.7, "test_en/macro_f1": 0.6, "val/accuracy": 0.8}),
        _run("b", "f1", "vanilla", {"test_en/accuracy": 0.3, "test_en/macro_f1": 0.2, "val/accuracy": 0.7}),
        _run("b", "f2", "vanilla", {"test_en/accuracy": 0.9}, status="FAILED"),
    ]
    rows = {r["config_id"]: r for r in fold_rows(runs)}
    mean, std, n = rows["a"]["stats"]["test_en/accuracy"]
    assert (round(mean, 6), round(std, 6), n) == (0.6, round(0.2 / 2**0.5, 6), 2)
    assert rows["b"]["folds"] == 1 and rows["b"]["stats"]["test_en/accuracy"][1] == 0.0
    best = best_per_scenario(runs, "val/accuracy", "max")
    assert best["finer"].data.tags["fold"] == "f1" and set(best) == {"finer", "vanilla"}


def test_a_sweeps_kind_is_stored_with_its_grid_and_sets_ashas_horizon():
    from orchestrator.grid import TrialGrid
    from orchestrator.tuner import max_epochs

    for name, preset, epochs in (("features", None, 1), ("text", "tiny", 3), ("smoke", None, 8)):
        grid = plan_of(name, preset)
        stored = TrialGrid.from_dict(grid.to_dict())  # what --resume runs
        assert stored.kind == grid.kind == search_spaces.load(name).kind
        assert max_epochs(stored.phases[-1].variants, stored.kind) == epochs + 1


def test_encoder_rows_give_emobox_stats_of_each_encoders_selected_configuration_over_its_folds():
    def run(config_id, fold, start, val, test, status="FINISHED"):
        trial = _run(config_id, fold, "fine_tune", {"val/accuracy": val, **test}, status)
        trial.data.params = {"start": start}
        trial.data.tags["encoder_family"] = {"tiny": "wav2vec2", "tiny_whisper": "whisper"}[start]
        return trial

    def emobox(ua, wa, f1):
        return {"test_en/uar": ua, "test_en/accuracy": wa, "test_en/macro_f1": f1}

    runs = [
        run("w_good", "f1", "tiny_whisper", 0.9, emobox(0.6, 0.7, 0.5)),
        run("w_good", "f2", "tiny_whisper", 0.8, emobox(0.8, 0.9, 0.7)),
        run("w_bad", "f1", "tiny_whisper", 0.5, emobox(0.99, 0.99, 0.99)),  # best on test, not on validation
        run("w_bad", "f2", "tiny_whisper", 0.5, emobox(0.99, 0.99, 0.99)),
        run("v", "f1", "tiny", 0.7, emobox(0.4, 0.5, 0.3)),
        run("v", "f2", "tiny", 0.7, emobox(0.9, 0.9, 0.9), status="FAILED"),
    ]
    assert varies_start(runs) and not varies_start(runs[:4])
    rows = {row.start: row for row in encoder_rows(runs, "val/accuracy", "max")}
    whisper = rows["tiny_whisper"]
    assert (whisper.family, whisper.scenario, whisper.trials, whisper.folds) == ("whisper", "fine_tune", 4, 2)
    assert whisper.selected.config_id == "w_good"
    for key, mean in (("test_en/uar", 0.7), ("test_en/accuracy", 0.8), ("test_en/macro_f1", 0.6)):
        assert whisper.stats[key][0] == pytest.approx(mean)
        assert whisper.stats[key][1] == pytest.approx(0.2 / 2**0.5)
    # "v" finished one of its two folds: an incomplete configuration is never selected (issue 21)
    assert rows["tiny"].selected is None and rows["tiny"].folds == 0 and rows["tiny"].trials == 2


def test_each_sweep_declares_its_scenarios_in_report_order_and_its_mixing_knob():
    transfer = search_spaces.load("transfer_zh")
    assert transfer.scenario_order() == ("base", "zero_shot", "zh_only", "mixed")
    assert transfer.mixing_knob == transfer.with_preset("tiny").mixing_knob == "english_fraction"
    assert search_spaces.load("finer_vs_vanilla").scenario_order() == ("finer", "vanilla")  # the paper's Tables 1, 2
    assert search_spaces.load("smoke").scenario_order() == ("smoke",)
    for name in search_spaces.available():
        spec = search_spaces.load(name)
        assert spec.mixing_knob is None or spec.mixing_knob in spec.keys(), "a declared knob the sweep varies"
    with pytest.raises(ValueError, match="mixing_knob 'english_share' is not one of"):
        transfer.replace(mixing_knob="english_share")
