"""The frozen-stage feature cache keeps encoders apart: family, weights, layer choice and pooling are in its key."""

import numpy as np
import pytest
import torch

from shards.reader import ShardReader
from workers.finetune import encoders
from workers.finetune.batch_sources import AudioSource, Feeding, frozen_features
from workers.finetune.head_cache import feature_key
from workers.finetune.model import EmotionClassifier, build_encoder

FEEDING = Feeding(torch.device("cpu"), bf16=False, grad_accum_steps=1, prefetch_batches=0, eval_batch_size=8)
ROWS = np.arange(6, dtype=np.int64)


def source(model: EmotionClassifier, reader: ShardReader) -> AudioSource:
    return AudioSource(model, reader, max_samples=0, feeding=FEEDING, encoder_train_mode=False)


def classifier(start: str, layer="last") -> EmotionClassifier:
    torch.manual_seed(0)  # the same start builds the same random weights
    return EmotionClassifier(build_encoder(start), head_dropout=0.0, layer=layer)


def cache_files(directory) -> set[str]:
    return {p.name for p in directory.glob("*.npz")}


def test_every_part_of_the_key_changes_it():
    base = dict(
        family="wav2vec2",
        encoder_id="abc",
        layer="last",
        pooling="mean",
        content_hash="data",
        rows=ROWS,
        max_samples=0,
    )
    key = feature_key(**base)
    assert feature_key(**base) == key
    changes = dict(
        family="hubert",
        encoder_id="abd",
        layer=1,
        pooling="attention",
        content_hash="other",
        rows=ROWS[:-1],
        max_samples=16_000,
    )
    for name, value in changes.items():
        assert feature_key(**{**base, name: value}) != key, name
    assert feature_key(**{**base, "rows": ROWS[::-1]}) == key  # the same clips in any order


def test_encoders_and_layers_never_share_an_entry(demo_dir, tmp_path):
    reader = ShardReader(demo_dir)
    cache = tmp_path / "features"
    last, status = frozen_features(source(classifier("tiny"), reader), ROWS, str(cache))
    assert status == "computed"
    again, status = frozen_features(source(classifier("tiny"), reader), ROWS, str(cache))
    assert status == "hit" and np.array_equal(again.table.features, last.table.features)

    # The same weights pooled at another layer: a new entry, and other features.
    first_layer, status = frozen_features(source(classifier("tiny", layer=1), reader), ROWS, str(cache))
    assert status == "computed"
    assert not np.allclose(first_layer.table.features, last.table.features)

    # Another family (same width, so a shared entry would even fit the head): a new entry too.
    for start in ("tiny_hubert", "tiny_whisper"):
        other, status = frozen_features(source(classifier(start), reader), ROWS, str(cache))
        assert status == "computed", start
        assert other.table.features.shape == last.table.features.shape
        assert not np.allclose(other.table.features, last.table.features), start
    assert len(cache_files(cache)) == 4


@pytest.mark.parametrize("model_type", ["wav2vec2", "whisper"])
def test_the_cached_features_are_the_ones_the_head_would_see(demo_dir, tmp_path, model_type):
    reader = ShardReader(demo_dir)
    torch.manual_seed(0)
    model = EmotionClassifier(build_encoder(encoders.tiny_config(model_type)), layer=1).eval()
    features, _ = frozen_features(source(model, reader), ROWS, str(tmp_path))
    audio = [torch.from_numpy(np.array(reader.audio(int(row)))) for row in ROWS]
    with torch.no_grad():
        direct = torch.cat([model.pool_audio(clip[None, :], torch.tensor([len(clip)])) for clip in audio])
    assert np.allclose(features.table.features, direct.numpy(), atol=1e-4)
