"""Imbalanced classes: the weights are the hand-computed ones, balanced sampling draws every class equally
often over an epoch of an imbalanced training set and still length-buckets it, the loss weighs each clip by
its class, the features baseline fits with the same weights, and the plan line shows the clips per class."""

from collections import Counter

import numpy as np
import pytest
import torch

from orchestrator import plan_line
from orchestrator.grid import Variant
from shards.batching import mix_languages, plan_batches
from shards.reader import ShardReader
from workers.core.class_balance import class_counts, class_weights, counts_text
from workers.finetune.balance import TrainingLoss
from workers.finetune.config import TrialConfig

# Taken from the demo corpus's training speakers: a 18:9:6:3:1 training set (real shards, real labels).
QUOTA = {"Angry": 18, "Happy": 9, "Neutral": 6, "Sad": 3, "Surprise": 1}


def imbalanced_rows(reader: ShardReader) -> np.ndarray:
    rows = reader.index.select(["0011", "0012", "0013", "0014"])
    taken = [rows[reader.index.emotion[rows] == emotion][:count] for emotion, count in QUOTA.items()]
    return np.sort(np.concatenate(taken))


def test_balanced_and_sqrt_weights_are_the_hand_computed_ones():
    counts = np.array([36, 9, 4, 0])  # n = 49 clips, k = 3 classes with clips
    assert np.allclose(class_weights(counts, "none"), [1, 1, 1, 1])
    # balanced: n / (k n_c), scikit-learn's; a class without clips gets 1 (no target has it)
    assert np.allclose(class_weights(counts, "balanced"), [49 / 108, 49 / 27, 49 / 12, 1])
    # sqrt: 1/sqrt(n_c) = 1/6, 1/3, 1/2, scaled so the mean over the clips is 1: x 49 / (6 + 3 + 2)
    assert np.allclose(class_weights(counts, "sqrt"), [49 / 66, 49 / 33, 49 / 22, 1])
    for mode in ("balanced", "sqrt"):
        assert np.isclose((counts * class_weights(counts, mode))[:3].sum(), counts.sum())
    with pytest.raises(ValueError, match="class_weights"):
        TrialConfig(class_weights="inverse")


def test_balanced_sampling_draws_each_class_equally_often_over_an_epoch(demo_dir):
    reader = ShardReader(demo_dir)
    rows = imbalanced_rows(reader)  # 37 clips: 18, 9, 6, 3, 1
    assert sorted(Counter(reader.index.emotion[rows]).values()) == [1, 3, 6, 9, 18]
    epoch = mix_languages(reader.index, rows, None, np.random.default_rng(0), class_uniform=True)
    counts = Counter(reader.index.emotion[epoch])
    assert len(epoch) == len(rows) and set(counts) == set(QUOTA)
    assert max(counts.values()) - min(counts.values()) <= 1  # 37 = 5 x 7 + 2: two classes get 8
    assert set(epoch) <= set(rows)
    # The one Surprise clip repeats; the Angry clips drawn are distinct (subsampled, not repeated).
    angry = epoch[reader.index.emotion[epoch] == "Angry"]
    assert len(set(angry)) == len(angry)
    # Seeded: the same rng state, the same epoch; the next epoch is a fresh draw.
    rng = np.random.default_rng(0)
    first = mix_languages(reader.index, rows, None, rng, class_uniform=True)
    assert np.array_equal(first, epoch)
    assert not np.array_equal(mix_languages(reader.index, rows, None, rng, class_uniform=True), first)
    # Without balanced sampling the epoch is the training set, imbalance and all.
    plain = mix_languages(reader.index, rows, None, np.random.default_rng(0))
    assert Counter(reader.index.emotion[plain]) == Counter(reader.index.emotion[rows])


def test_a_balanced_epoch_is_still_length_bucketed(demo_dir):
    reader = ShardReader(demo_dir)
    rows = imbalanced_rows(reader)
    rng = np.random.default_rng(3)
    epoch = mix_languages(reader.index, rows, None, rng, class_uniform=True)
    plans = plan_batches(reader.index, epoch, 4, rng)
    assert sorted(np.concatenate([p.rows for p in plans])) == sorted(epoch)
    # One bucketing window (< 32 batches): batches are consecutive stretches of the length order.
    spans = sorted((reader.index.num_samples[p.rows].min(), reader.index.num_samples[p.rows].max()) for p in plans)
    assert all(high <= next_low for (_, high), (next_low, _) in zip(spans, spans[1:]))


def test_balanced_sampling_with_a_language_mix_is_class_uniform_within_each_language(demo_dir):
    reader = ShardReader(demo_dir)
    en = imbalanced_rows(reader)
    zh = reader.index.select(["0001"])
    epoch = mix_languages(reader.index, np.concatenate([en, zh]), 0.5, np.random.default_rng(1), class_uniform=True)
    for language in ("en", "zh"):
        counts = Counter(reader.index.emotion[epoch[reader.index.language[epoch] == language]])
        assert len(counts) == 5 and max(counts.values()) - min(counts.values()) <= 1


def test_the_training_loss_weighs_each_clip_by_its_class_and_smooths_labels():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [0.0, 3.0, 1.0]])
    labels = torch.tensor([0, 2, 2])
    weight = torch.tensor([0.5, 1.0, 3.0])
    per_clip = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    assert torch.isclose(TrainingLoss()(logits, labels), per_clip.sum())
    assert torch.isclose(TrainingLoss(weight)(logits, labels), (weight[labels] * per_clip).sum())
    assert not torch.isclose(TrainingLoss(label_smoothing=0.2)(logits, labels), per_clip.sum())


def test_the_features_baseline_fits_with_the_class_weights_as_sample_weights():
    from workers.acoustic.config import FeaturesConfig
    from workers.acoustic.trial import build_classifier, fit_weights

    rng = np.random.default_rng(0)
    labels = np.array([0] * 90 + [1] * 10)
    values = rng.normal(size=(100, 4)) + labels[:, None] * 0.7  # overlapping classes: the weights decide
    recalls = {}
    for mode in ("none", "balanced"):
        cfg = FeaturesConfig(class_weights=mode, max_iter=200)
        pipeline = build_classifier(cfg)
        weights = fit_weights(cfg, pipeline, labels)
        if mode == "balanced":
            (key, sample_weight), *_ = weights.items()
            assert key == "logisticregression__sample_weight"
            assert np.allclose(np.unique(sample_weight), [100 / 180, 100 / 20])
        pipeline.fit(values, labels, **weights)
        recalls[mode] = np.mean(pipeline.predict(values[labels == 1]) == 1)
    assert recalls["balanced"] > recalls["none"]  # the minority class is found more often
    with pytest.raises(ValueError, match="class_weights"):
        FeaturesConfig(class_weights="Balanced")


def test_the_plan_line_shows_training_clips_per_class_of_each_training_set():
    counts = {  # the manifest's speaker x label counts
        "a": {"neutral": 50, "angry": 5},
        "b": {"neutral": 30, "angry": 10},
        "c": {"neutral": 20, "angry": 20},
    }
    one = [Variant("main", {"train_speakers": ("a", "b")}), Variant("main", {"train_speakers": ("a", "b")})]
    assert plan_line.lines(one, counts) == ["  train speakers' clips per class: neutral 80, angry 15 (imbalance 5.3x)"]
    folds = [Variant("m", {"train_speakers": ("a", "b")}, fold="c"), Variant("m", {"train_speakers": ("b", "c")}, "a")]
    assert plan_line.lines(folds, counts) == [
        "  train speakers' clips per class (c): neutral 80, angry 15 (imbalance 5.3x)",
        "  train speakers' clips per class (a): neutral 50, angry 30 (imbalance 1.7x)",
    ]
    assert counts_text(class_counts(np.array([1, 1, 0]), 3), ("x", "y", "z")) == "x 1, y 2, z 0 (imbalance 2.0x)"


def test_the_knobs_are_set_as_a_shell_user_types_them():
    from orchestrator.sweep import parse_overrides

    values = parse_overrides(
        ["class_weights=sqrt", "balanced_sampling=true", "noise_snr_db=[10,30]", "gain_db=None", "label_smoothing=0.1"]
    )
    assert values == {
        "class_weights": "sqrt",
        "balanced_sampling": True,
        "noise_snr_db": (10, 30),
        "gain_db": None,
        "label_smoothing": 0.1,
    }
    cfg = TrialConfig.from_dict(values)
    assert cfg.balanced_sampling is True and cfg.noise_snr_db == (10, 30)
    with pytest.raises(ValueError, match="noise_snr_db"):
        TrialConfig(noise_snr_db=(30.0, 10.0))
    with pytest.raises(ValueError, match="noise_snr_db is None"):
        TrialConfig(noise_path="/noise/shards")
    with pytest.raises(ValueError, match="absolute"):
        TrialConfig(noise_path="noise/shards", noise_snr_db=(5.0, 15.0))


@pytest.fixture(scope="module")
def imbalanced_dir(demo_dir, tmp_path_factory):
    """A corpus on disk: a training speaker whose classes are 6:3:2:1:1 and a held-out one with a clip of each
    (copied from the demo's)."""
    from shards.demo import DEMO_SPEAKERS
    from shards.schema import Clip
    from shards.splits import write_plans
    from shards.writer import ShardWriter

    quota = {"Angry": 6, "Happy": 3, "Neutral": 2, "Sad": 1, "Surprise": 1}
    speakers = {s: DEMO_SPEAKERS[s] for s in ("0011", "0015")}
    reader, out = ShardReader(demo_dir), tmp_path_factory.mktemp("imbalanced")
    index = reader.index
    with ShardWriter(out, speakers=speakers) as writer:
        for speaker in speakers:
            for emotion, count in quota.items():
                picked = np.flatnonzero((index.speaker == speaker) & (index.emotion == emotion))
                for row in picked[: 1 if speaker == "0015" else count]:
                    clip = np.array(reader.audio(int(row)))
                    fields = dict(speaker=speaker, language=str(index.language[row]), emotion=emotion)
                    writer.add(
                        Clip(
                            str(index.utterance_id[row]),
                            split=str(index.split[row]),
                            transcript="",
                            audio=clip,
                            **fields,
                        )
                    )
    write_plans(out, speakers)
    return out


def test_a_trial_with_every_imbalance_and_augmentation_knob_trains_and_says_what_it_did(imbalanced_dir, tmp_path):
    """One tiny trial, one epoch: class weights from its training clips, balanced sampling, speed perturbation
    and noise; the run's tags show the counts and weights, and the head stage stays off cached features."""
    from workers.core.reporting import ListReporter
    from workers.core.tracking import NullLogger
    from workers.finetune.recipe import run_trial
    from workers.vocabulary import Key, Tag

    class TagLogger(NullLogger):
        tags: dict = {}

        def set_tags(self, tags):
            self.tags.update(tags)

    stage = {"trainable": "head", "epochs": 1.0, "learning_rate": 1e-3, "batch_size": 4}
    cfg = TrialConfig.from_dict(
        dict(
            data_dir=str(imbalanced_dir),
            train_speakers=("0011",),
            max_seconds=1.0,  # training crops (augmented after cropping); evaluation takes whole clips
            eval_sets={"test_en": ("0015",)},
            val_fraction=0.0,
            stages=(stage,),
            eval_every_steps=100,
            prefetch_batches=2,
            feature_cache_dir=str(tmp_path / "features"),
            class_weights="balanced",
            balanced_sampling=True,
            speed_perturb=True,
            noise_snr_db=[10, 30],
            label_smoothing=0.1,
        )
    )
    logger = TagLogger()
    final = run_trial(cfg, logger, ListReporter())
    assert final[Key.set_metric("test_en", "accuracy")] >= 0 and final[Key.STEP] == 4  # 13 clips / 4
    assert logger.tags[Tag.TRAIN_CLIPS_PER_CLASS] == "Angry 6, Happy 3, Neutral 2, Sad 1, Surprise 1 (imbalance 6.0x)"
    # balanced: 13 / (5 x n_c)
    expected = ", ".join(
        f"{e} {13 / (5 * n):.3f}" for e, n in (("Angry", 6), ("Happy", 3), ("Neutral", 2), ("Sad", 1), ("Surprise", 1))
    )
    assert logger.tags[Tag.CLASS_WEIGHT_VALUES] == expected
    assert logger.tags[Tag.feature_cache(0)].startswith("not used: augmentation")
