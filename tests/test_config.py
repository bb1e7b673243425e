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
