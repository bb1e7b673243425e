"""Checkpoints round-trip: what load_model rebuilds gives the logits the saved model gave."""

import numpy as np
import pytest
import torch

from shards.batching import collate
from shards.reader import ShardReader
from workers.finetune.checkpoint import load_model, save_model
from workers.finetune.head_cache import encoder_fingerprint
from workers.finetune.model import EmotionClassifier, build_encoder, normalize_audio, tiny_encoder_config


@pytest.fixture(scope="module")
def inputs(demo_dir):
    reader = ShardReader(demo_dir)
    batch = collate(reader, reader.index.select(["0012"])[::6])
    return normalize_audio(torch.from_numpy(batch.audio), torch.from_numpy(batch.lengths))


@pytest.mark.parametrize("pooling", ["mean", "attentive", "weighted_sum"])
def test_save_and_load_give_identical_logits(tmp_path, inputs, pooling):
    torch.manual_seed(1)
    model = EmotionClassifier(build_encoder("tiny", {"mask_time_prob": 0.05}), head_dropout=0.2, pooling=pooling)
    with torch.no_grad():  # move the pooler's weights off their initial values
        for parameter in model.pooler.parameters():
            parameter.add_(torch.randn_like(parameter))
    save_model(model, tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    values, mask = inputs
    with torch.no_grad():
        assert torch.equal(
            model.eval().classify_waveform(values, attention_mask=mask),
            loaded.eval().classify_waveform(values, attention_mask=mask),
        )
    assert loaded.pooling == pooling and loaded.head.dropout.p == 0.2 and loaded.labels == model.labels


def test_a_kept_state_is_saved_in_place_of_the_current_weights(tmp_path, inputs):
    torch.manual_seed(2)
    model = EmotionClassifier(build_encoder("tiny"))
    best = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.head.out_proj.weight.add_(1.0)
    save_model(model, tmp_path / "best", state_dict=best)
    loaded = load_model(tmp_path / "best")
    model.load_state_dict(best)
    values, mask = inputs
    with torch.no_grad():
        assert torch.equal(
            model.eval().classify_waveform(values, attention_mask=mask),
            loaded.eval().classify_waveform(values, attention_mask=mask),
        )


def test_regularisation_overrides_apply_when_loading(tmp_path):
    save_model(EmotionClassifier(build_encoder("tiny")), tmp_path / "plain")  # saved with masking off
    loaded = load_model(tmp_path / "plain", encoder_overrides={"mask_time_prob": 0.1, "hidden_dropout": 0.3})
    assert loaded.encoder.config.mask_time_prob == 0.1 and hasattr(loaded.encoder, "masked_spec_embed")
    assert loaded.encoder.encoder.layers[0].dropout.p == 0.3
    save_model(loaded, tmp_path / "masked")  # and back: masking off drops the mask embedding
    assert not hasattr(
        load_model(tmp_path / "masked", encoder_overrides={"mask_time_prob": 0.0}).encoder, "masked_spec_embed"
    )


def test_weighted_layer_sum_refuses_an_encoder_with_layerdrop():
    with pytest.raises(ValueError, match="layerdrop=0"):
        EmotionClassifier(build_encoder("tiny", {"layerdrop": 0.1}), pooling="weighted_sum")


def test_the_encoder_fingerprint_follows_the_weights_not_the_regularisation():
    torch.manual_seed(3)
    encoder = build_encoder(tiny_encoder_config())
    same_weights = build_encoder(tiny_encoder_config(), {"hidden_dropout": 0.3, "mask_time_prob": 0.1})
    same_weights.load_state_dict(encoder.state_dict(), strict=False)
    assert encoder_fingerprint(encoder) == encoder_fingerprint(same_weights)
    with torch.no_grad():
        encoder.encoder.layers[1].feed_forward.output_dense.bias[3] += 1e-3
    assert encoder_fingerprint(encoder) != encoder_fingerprint(same_weights)


def test_every_saved_tensor_is_contiguous_on_cpu(tmp_path):
    from safetensors.numpy import load_file

    save_model(EmotionClassifier(build_encoder("tiny")), tmp_path / "m")
    stored = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert all(isinstance(v, np.ndarray) for v in stored.values()) and "head.dense.weight" in stored
