"""Augmentation: speed perturbation changes the length by the factor, noise lands at the SNR asked, gain by
the dB asked, the same seed gives the same audio, and evaluation batches never see any of it."""

import numpy as np
import pytest

from shards.batching import collate_planned, plan_batches
from shards.reader import ShardReader
from workers.finetune.augment import (
    NOISE_EXPONENTS,
    Augmenter,
    add_noise,
    cache_blocker,
    coloured_noise,
    speed_perturb,
)
from workers.finetune.batch_sources import AudioSource, Feeding
from workers.finetune.config import TrialConfig

EVERYTHING = dict(speed_perturb=True, noise_snr_db=(10.0, 30.0), gain_db=(-6.0, 6.0))


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    clean = clean.astype(np.float64)
    return 10 * np.log10(np.mean(clean**2) / np.mean((noisy.astype(np.float64) - clean) ** 2))


@pytest.fixture(scope="module")
def clip(demo_dir) -> np.ndarray:
    return np.array(ShardReader(demo_dir).audio(0))


@pytest.mark.parametrize("speed", [0.9, 1.1])
def test_speed_perturbation_changes_the_length_by_the_factor(clip, speed):
    out = speed_perturb(clip.astype(np.float32), speed)
    assert abs(len(out) - len(clip) / speed) <= 1
    assert speed_perturb(clip.astype(np.float32), 1.0) is not None


def test_speed_perturbation_through_the_augmenter_picks_one_of_the_three_factors(clip):
    augment = Augmenter(speed_perturb=True)
    ratios = {round(len(clip) / len(augment(clip, seed)), 2) for seed in range(30)}
    assert ratios == {0.9, 1.0, 1.1}


@pytest.mark.parametrize("snr", [0.0, 12.5, 30.0])
@pytest.mark.parametrize("colour", list(NOISE_EXPONENTS))
def test_noise_is_added_at_the_snr_asked(clip, snr, colour):
    noise = coloured_noise(len(clip), NOISE_EXPONENTS[colour], np.random.default_rng(0))
    assert snr_db(clip, add_noise(clip.astype(np.float32), noise, snr)) == pytest.approx(snr, abs=1e-3)


def test_the_augmenter_draws_the_snr_from_the_range_and_keeps_it_after_int16(clip):
    fixed = Augmenter(noise_snr_db=(17.0, 17.0))
    assert snr_db(clip, fixed(clip, 5)) == pytest.approx(17.0, abs=0.05)
    ranged = Augmenter(noise_snr_db=(10.0, 30.0))
    drawn = [snr_db(clip, ranged(clip, seed)) for seed in range(20)]
    assert 10 - 0.05 <= min(drawn) and max(drawn) <= 30 + 0.05 and max(drawn) - min(drawn) > 5


def test_noise_from_a_noise_corpus_is_at_the_snr_asked(clip, demo_dir):
    augment = Augmenter(noise_snr_db=(5.0, 5.0), noise_path=str(demo_dir))  # any shard directory is a noise corpus
    out = augment(clip, 11)
    assert snr_db(clip, out) == pytest.approx(5.0, abs=0.05)
    assert np.array_equal(out, augment(clip, 11))


def test_coloured_noise_has_the_spectral_slope_of_its_colour():
    for exponent in NOISE_EXPONENTS.values():
        noise = coloured_noise(2**15, exponent, np.random.default_rng(1))
        power = np.abs(np.fft.rfft(noise)) ** 2
        frequencies = np.fft.rfftfreq(len(noise))
        band = (frequencies > 0.002) & (frequencies < 0.4)
        slope = np.polyfit(np.log(frequencies[band]), np.log(power[band]), 1)[0]
        assert slope == pytest.approx(-exponent, abs=0.15)
        assert np.mean(noise**2) == pytest.approx(1.0, rel=1e-4)


def test_gain_scales_the_clip_by_the_db_asked(clip):
    out = Augmenter(gain_db=(-6.0, -6.0))(clip, 0)
    assert np.std(out.astype(float)) / np.std(clip.astype(float)) == pytest.approx(10 ** (-6 / 20), rel=1e-3)


def test_the_same_seed_gives_the_same_audio_and_another_seed_other_audio(clip):
    augment = Augmenter(**EVERYTHING)
    first = augment(clip, 42)
    assert first.dtype == np.int16 and np.array_equal(first, Augmenter(**EVERYTHING)(clip, 42))
    assert not np.array_equal(first, augment(clip, 43)[: len(first)])


def test_a_seeded_epoch_plan_collates_the_same_augmented_batch_twice(demo_dir):
    reader = ShardReader(demo_dir)
    rows = reader.index.select(["0011"])
    augment = Augmenter(**EVERYTHING)

    def first_batch(seed):
        plan = plan_batches(reader.index, rows, 4, np.random.default_rng(seed), seed_clips=True)[0]
        return collate_planned(reader, plan, 0, augment).audio

    assert np.array_equal(first_batch(0), first_batch(0))
    # Seeds are drawn after the batches and crops: with them, the epoch's batches are the ones without.
    with_seeds = plan_batches(reader.index, rows, 4, np.random.default_rng(0), 16000, seed_clips=True)
    without = plan_batches(reader.index, rows, 4, np.random.default_rng(0), 16000)
    assert all(np.array_equal(a.rows, b.rows) for a, b in zip(with_seeds, without))
    assert all(np.array_equal(a.crop_starts, b.crop_starts) for a, b in zip(with_seeds, without))


def test_evaluation_batches_are_bit_identical_with_augmentation_on_and_off(demo_dir):
    import torch

    reader = ShardReader(demo_dir)
    feeding = Feeding(torch.device("cpu"), bf16=False, grad_accum_steps=2, prefetch_batches=0, eval_batch_size=4)
    sources = {
        augmented: AudioSource(None, reader, 0, feeding, False, Augmenter(**EVERYTHING) if augmented else None)
        for augmented in (False, True)
    }
    rows = reader.index.select(["0015"])
    off, on = ([b.audio for b in sources[a].eval_batches(rows)] for a in (False, True))
    assert len(off) == len(on) and all(torch.equal(a, b) for a, b in zip(off, on))
    # ... while the training batches of the same source are augmented (the plans carry seeds).
    plans = plan_batches(reader.index, rows, 4, np.random.default_rng(0), seed_clips=True)
    trained = {a: [part.audio for step in sources[a].train_steps(plans) for part in step] for a in (False, True)}
    assert not any(a.shape == b.shape and torch.equal(a, b) for a, b in zip(trained[False], trained[True]))


def test_augmentation_keeps_training_off_cached_features(demo_dir, tmp_path):
    from workers.finetune.batch_sources import feature_cache_blocker
    from workers.finetune.recipe import build_model

    cfg = TrialConfig(data_dir=str(demo_dir), noise_snr_db=(10.0, 30.0))
    assert "noise_snr_db" in cache_blocker(cfg)
    assert cache_blocker(TrialConfig(data_dir=str(demo_dir))) is None
    reader = ShardReader(demo_dir)
    model = build_model(cfg, reader.labels)
    rows = reader.index.select(["0011"])
    assert "augmentation" in feature_cache_blocker(cfg, model, reader, rows, 0)
    plain = TrialConfig(data_dir=str(demo_dir))
    assert feature_cache_blocker(plain, model, reader, rows, 0) is None
