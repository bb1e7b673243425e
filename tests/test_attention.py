"""The trial's encoder runs the attention kernels its config names, whatever the start model's config said."""

from __future__ import annotations

import pytest
import torch

from workers.core.tracking import NullLogger
from workers.finetune.config import TrialConfig
from workers.finetune.recipe import setup


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_trial_encoder_uses_configured_attention(demo_dir, attention):
    torch.set_num_threads(1)
    cfg = TrialConfig(data_dir=str(demo_dir), attn_implementation=attention)
    trial = setup(cfg, NullLogger(), torch.device("cpu"), None)
    assert trial.model.encoder.config._attn_implementation == attention


def test_default_attention_is_sdpa_and_unknown_names_are_refused():
    assert TrialConfig().attn_implementation == "sdpa"
    with pytest.raises(ValueError, match="attn_implementation"):
        TrialConfig(attn_implementation="flash")
