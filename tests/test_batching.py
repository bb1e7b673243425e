import numpy as np

from shards.batching import bucket_batches, holdout, iter_batches, mix_languages
from shards.reader import ShardReader


def test_bucketing_cuts_padding(demo_dir):
    reader = ShardReader(demo_dir)
    rows = reader.index.select()
    lengths = reader.index.num_samples[rows]
    rng = np.random.default_rng(0)

    def padded(batches):
        total = sum(len(b) * lengths[b].max() for b in batches)
        return 1 - lengths.sum() / total

    random_batches = [p for p in np.array_split(rng.permutation(len(rows)), len(rows) // 8)]
    assert padded(bucket_batches(lengths, 8, rng)) < padded(random_batches) / 2


def test_batches_cover_every_row_once(demo_dir):
    reader = ShardReader(demo_dir)
    rows = reader.index.select(["0011", "0012"])
    seen = np.concatenate([b.rows for b in iter_batches(reader, rows, 8, np.random.default_rng(1))])
    assert sorted(seen) == sorted(rows)


def test_holdout_is_stable_and_disjoint(demo_dir):
    reader = ShardReader(demo_dir)
    rows = reader.index.select(["0011", "0012", "0013"])
    train, val = holdout(reader.index, rows, 0.2, seed=0)
    train_again, val_again = holdout(reader.index, rows[::-1], 0.2, seed=0)
    assert set(val) == set(val_again) and not set(train) & set(val)
    assert 0.05 < len(val) / len(rows) < 0.4


def test_mix_ratio_holds_within_sampling_error(demo_dir):
    reader = ShardReader(demo_dir)
    rows = reader.index.select(["0011", "0012", "0001"])
    for fraction in (0.0, 0.3, 0.8, 1.0):
        picks = np.concatenate([mix_languages(reader.index, rows, fraction, np.random.default_rng(s)) for s in range(20)])
        share = np.mean(reader.index.language[picks] == "en")
        sigma = np.sqrt(fraction * (1 - fraction) / len(picks))
        assert abs(share - fraction) <= 4 * sigma + 1e-9
