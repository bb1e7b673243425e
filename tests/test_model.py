import numpy as np
import pytest
import torch

from shards.batching import collate
from shards.reader import ShardReader
from workers.finetune.model import EmotionClassifier, build_encoder, normalize_audio, set_trainable


@pytest.fixture
def batch(demo_dir):
    reader = ShardReader(demo_dir)
    rows = reader.index.select(["0011"])[::5]  # six clips across the emotions
    return collate(reader, rows)


def make_model(seed=0):
    torch.manual_seed(seed)
    return EmotionClassifier(build_encoder("tiny"), head_dropout=0.0)


def test_output_has_one_logit_per_emotion(batch):
    values, mask = normalize_audio(torch.from_numpy(batch.audio), torch.from_numpy(batch.lengths))
    logits = make_model().classify_waveform(values, attention_mask=mask)
    assert logits.shape == (len(batch.rows), 5)


def test_padding_is_masked(batch):
    model = make_model().eval()
    values, mask = normalize_audio(torch.from_numpy(batch.audio), torch.from_numpy(batch.lengths))
    assert mask.sum() < mask.numel(), "fixture batch should contain padding"
    labels = torch.from_numpy(batch.labels)
    with torch.no_grad():
        masked = torch.nn.functional.cross_entropy(model.classify_waveform(values, attention_mask=mask), labels)
        unmasked = torch.nn.functional.cross_entropy(model.classify_waveform(values), labels)
        # A clip alone gives the same logits as in a padded batch when the mask is passed.
        shortest = int(np.argmin(batch.lengths))
        alone_values, alone_mask = normalize_audio(
            torch.from_numpy(batch.audio[shortest : shortest + 1, : batch.lengths[shortest]]),
            torch.from_numpy(batch.lengths[shortest : shortest + 1]),
        )
        alone = model.classify_waveform(alone_values, attention_mask=alone_mask)
        in_batch = model.classify_waveform(values, attention_mask=mask)[shortest : shortest + 1]
    assert not torch.isclose(masked, unmasked)
    torch.testing.assert_close(alone, in_batch, atol=1e-4, rtol=1e-4)


def _step(model, batch):
    values, mask = normalize_audio(torch.from_numpy(batch.audio), torch.from_numpy(batch.lengths))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = torch.nn.functional.cross_entropy(
        model.classify_waveform(values, attention_mask=mask), torch.from_numpy(batch.labels)
    )
    loss.backward()
    optimizer.step()


def test_head_stage_freezes_encoder_and_next_stage_trains_it_but_not_the_cnn(batch):
    model = make_model()
    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    set_trainable(model, "head")
    _step(model, batch)
    assert all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in encoder_before.items())
    assert any(not torch.equal(v, model.head.state_dict()[k]) for k, v in head_before.items())

    set_trainable(model, "all_but_cnn")
    _step(model, batch)
    after = model.encoder.state_dict()
    cnn = [k for k in encoder_before if k.startswith("feature_extractor.")]
    transformer = [k for k in encoder_before if k.startswith("encoder.layers.")]
    assert all(torch.equal(encoder_before[k], after[k]) for k in cnn)
    assert any(not torch.equal(encoder_before[k], after[k]) for k in transformer)


def test_tiny_model_overfits_a_few_clips(batch):
    model = make_model()
    set_trainable(model, "all")
    values, mask = normalize_audio(torch.from_numpy(batch.audio), torch.from_numpy(batch.lengths))
    labels = torch.from_numpy(batch.labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(80):
        loss = torch.nn.functional.cross_entropy(model.classify_waveform(values, attention_mask=mask), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2


@pytest.mark.parametrize("pooling", ["attentive", "weighted_sum"])
def test_pooling_variants_mask_padding_too(batch, pooling):
    torch.manual_seed(0)
    model = EmotionClassifier(build_encoder("tiny"), head_dropout=0.0, pooling=pooling).eval()
    values, mask = normalize_audio(torch.from_numpy(batch.audio), torch.from_numpy(batch.lengths))
    shortest = int(np.argmin(batch.lengths))
    alone_values, alone_mask = normalize_audio(
        torch.from_numpy(batch.audio[shortest : shortest + 1, : batch.lengths[shortest]]),
        torch.from_numpy(batch.lengths[shortest : shortest + 1]),
    )
    with torch.no_grad():
        in_batch = model.classify_waveform(values, attention_mask=mask)[shortest : shortest + 1]
        alone = model.classify_waveform(alone_values, attention_mask=alone_mask)
    torch.testing.assert_close(alone, in_batch, atol=1e-4, rtol=1e-4)


def test_the_pooler_trains_with_the_head_in_a_head_only_stage():
    model = EmotionClassifier(build_encoder("tiny"), pooling="attentive")
    set_trainable(model, "head")
    assert all(p.requires_grad for p in model.pooler.parameters())
    assert not any(p.requires_grad for p in model.encoder.parameters())


def test_the_xlsr53_config_has_the_checkpoint_architecture():
    from transformers import Wav2Vec2Model

    from workers.finetune.model import xlsr53_encoder_config

    config = xlsr53_encoder_config()
    with torch.device("meta"):  # shapes only: no 1.3 GB allocation
        encoder = Wav2Vec2Model(config)
    num_parameters = sum(p.numel() for p in encoder.parameters())
    assert 310e6 < num_parameters < 320e6  # XLSR-53 large: ~315M
    assert list(config.conv_dim) == [512] * 7 and np.prod(config.conv_stride) == 320
    assert config.do_stable_layer_norm and config.feat_extract_norm == "layer"
