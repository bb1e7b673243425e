"""Config keys and values as users type them: Hugging Face aliases, typos, wrong types."""

from __future__ import annotations

import pytest

from workers.finetune.config import KEY_ALIASES, TrialConfig


def test_hugging_face_names_are_aliases_of_the_projects_keys():
    cfg = TrialConfig.from_dict(
        {
            "gradient_accumulation_steps": 2,
            "eval_steps": 5,
            "per_device_eval_batch_size": 4,
            "early_stopping_patience": 3,
            "model_name_or_path": "facebook/wav2vec2-large-xlsr-53",
        }
    )
    assert (cfg.grad_accum_steps, cfg.eval_every_steps, cfg.eval_batch_size) == (2, 5, 4)
    assert (cfg.early_stop_patience, cfg.start) == (3, "facebook/wav2vec2-large-xlsr-53")
    assert set(KEY_ALIASES.values()) <= set(TrialConfig.field_names())


def test_an_alias_beside_its_own_key_is_refused():
    with pytest.raises(ValueError, match="given twice"):
        TrialConfig.from_dict({"eval_steps": 5, "eval_every_steps": 10})


def test_a_typo_names_the_closest_key_not_all_of_them():
    with pytest.raises(ValueError, match="did you mean 'learning_rate'") as error:
        TrialConfig.from_dict({"learnig_rate": 1e-3})
    assert "batch_size" not in str(error.value)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"learning_rate": "abc"}, "'learning_rate' expects float"),
        ({"batch_size": 2.5}, "'batch_size' expects int"),
        ({"bf16": "yes"}, "'bf16' expects bool"),
        ({"english_fraction": "half"}, "'english_fraction' expects"),
    ],
)
def test_a_value_of_the_wrong_type_names_the_key_and_the_type(values, expected):
    with pytest.raises(ValueError, match=expected):
        TrialConfig.from_dict(values)


def test_values_of_the_right_type_pass_ints_for_floats_included():
    cfg = TrialConfig.from_dict({"learning_rate": 1, "english_fraction": None, "train_speakers": ["0011"]})
    assert cfg.learning_rate == 1.0 and isinstance(cfg.learning_rate, float)
    assert cfg.train_speakers == ("0011",)


# ---------------------------------------------------------------- --set, checked once at the door


def test_set_keys_come_out_of_the_door_canonical_and_typed():
    from orchestrator.sweep import parse_overrides

    assert parse_overrides(["per_device_train_batch_size=16", "gradient_accumulation_steps=2", "learning_rate=3"]) == {
        "batch_size": 16,
        "grad_accum_steps": 2,
        "learning_rate": 3.0,  # an int where a float is declared, as the config holds it
    }
    assert parse_overrides(["per_device_train_batch_size=8", "num_train_epochs=1"], "text") == {
        "batch_size": 8,
        "epochs": 1,
    }


def test_a_set_typo_names_the_closest_key_of_the_sweeps_kind():
    from orchestrator.sweep import UsageError, parse_overrides

    with pytest.raises(UsageError, match="did you mean 'learning_rate'"):
        parse_overrides(["learnig_rate=1e-3"])
    with pytest.raises(UsageError, match="unknown TextConfig key 'batch_sise'; did you mean 'batch_size'"):
        parse_overrides(["batch_sise=4"], "text")
    with pytest.raises(UsageError, match="both set 'batch_size'"):
        parse_overrides(["batch_size=8", "per_device_train_batch_size=16"])


def test_a_hugging_face_alias_overrides_the_sweeps_own_value_of_its_key(demo_dir, tracking_uri, tmp_path):
    """smoke sets batch_size itself: the alias used to reach the trial beside it ("given twice")."""
    import search_spaces
    from orchestrator import sweep

    flags = ["--set", "per_device_train_batch_size=4", "--set", "gradient_accumulation_steps=2"]
    args = sweep.parse_args(["smoke", "--data", str(demo_dir), "--tracking-uri", tracking_uri, *flags])
    record = sweep.new_sweep(search_spaces.load("smoke"), args, str(tmp_path / "ray"))
    trials = [v["values"] for phase in record.grid["phases"] for v in phase["variants"]]
    assert len(trials) == 4
    for values in trials:
        assert (values["batch_size"], values["grad_accum_steps"]) == (4, 2)
        assert not {"per_device_train_batch_size", "gradient_accumulation_steps"} & set(values)


def test_an_alias_fixes_a_key_that_a_baseline_sweep_tunes():
    """The text sweep tunes batch_size over [16, 32]; Hugging Face's name for it fixes it for every trial."""
    import search_spaces
    from orchestrator.grid import build_grid
    from orchestrator.sweep import parse_overrides
    from shards.demo import DEMO_SPEAKERS

    spec = search_spaces.load("text").with_preset("tiny")
    spec = spec.override(parse_overrides(["per_device_train_batch_size=8"], spec.kind))
    grid = build_grid(spec, DEMO_SPEAKERS, place={"data_dir": "/data", "num_threads": 1})
    assert {v.values["batch_size"] for p in grid.phases for v in p.variants} == {8}
    assert "batch_size" not in grid.tuned


def test_a_set_key_replaces_the_sweeps_value_given_under_an_alias(demo_dir, tracking_uri, tmp_path):
    import dataclasses

    import search_spaces
    from orchestrator import sweep

    smoke = search_spaces.load("smoke")
    base = {k: v for k, v in smoke.base.items() if k != "batch_size"}
    spec = dataclasses.replace(smoke, base={**base, "per_device_train_batch_size": 8})
    args = sweep.parse_args(["smoke", "--data", str(demo_dir), "--tracking-uri", tracking_uri, "--set", "batch_size=4"])
    record = sweep.new_sweep(spec, args, str(tmp_path / "ray"))
    assert {v["values"]["batch_size"] for p in record.grid["phases"] for v in p["variants"]} == {4}
