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
        picks = np.concatenate(
            [mix_languages(reader.index, rows, fraction, np.random.default_rng(s)) for s in range(20)]
        )
        share = np.mean(reader.index.language[picks] == "en")
        sigma = np.sqrt(fraction * (1 - fraction) / len(picks))
        assert abs(share - fraction) <= 4 * sigma + 1e-9


def test_mixing_is_deterministic_for_a_seed(demo_dir):
    reader = ShardReader(demo_dir)
    rows = reader.index.select(["0011", "0012", "0001"])
    first = mix_languages(reader.index, rows, 0.3, np.random.default_rng(7))
    again = mix_languages(reader.index, rows, 0.3, np.random.default_rng(7))
    other = mix_languages(reader.index, rows, 0.3, np.random.default_rng(8))
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert len(first) == len(rows)


def test_planned_crops_stay_inside_each_clip(demo_dir):
    from shards.batching import plan_batches

    reader = ShardReader(demo_dir)
    rows = reader.index.select(["0011"])
    max_samples = 8000
    plans = plan_batches(reader.index, rows, 4, np.random.default_rng(0), max_samples)
    for plan in plans:
        slack = np.maximum(reader.index.num_samples[plan.rows] - max_samples, 0)
        assert np.all((plan.crop_starts >= 0) & (plan.crop_starts <= slack))
    batches = list(iter_batches(reader, rows, 4, np.random.default_rng(0), max_samples))
    assert max(b.audio.shape[1] for b in batches) == max_samples
    assert any(plan.crop_starts.any() for plan in plans)  # crops do move


def test_prefetch_yields_what_the_plain_iterator_yields(demo_dir):
    from shards.batching import prefetch

    reader = ShardReader(demo_dir)
    rows = reader.index.select(["0011", "0012"])
    plain = list(iter_batches(reader, rows, 8, np.random.default_rng(3)))
    fetched = list(prefetch(iter_batches(reader, rows, 8, np.random.default_rng(3)), depth=2))
    assert len(plain) == len(fetched)
    for a, b in zip(plain, fetched):
        assert np.array_equal(a.audio, b.audio) and np.array_equal(a.rows, b.rows)
    assert list(prefetch(range(5), depth=0)) == [0, 1, 2, 3, 4]


def test_prefetch_stays_at_most_depth_ahead_and_stops_when_closed():
    import threading
    import time

    from shards.batching import prefetch

    produced = []

    def items():
        for i in range(1000):
            produced.append(i)
            yield i

    fetched = prefetch(items(), depth=3)
    assert next(fetched) == 0
    time.sleep(0.2)
    assert len(produced) <= 1 + 3 + 1  # handed out, queued, in the producer's hands
    fetched.close()
    time.sleep(0.2)
    count = len(produced)
    time.sleep(0.2)
    assert len(produced) == count < 1000
    assert not [t for t in threading.enumerate() if t.name == "batch-prefetch"]


def test_prefetch_raises_the_producers_error():
    import pytest

    from shards.batching import prefetch

    def failing():
        yield 1
        raise RuntimeError("shard unreadable")

    with pytest.raises(RuntimeError, match="shard unreadable"):
        list(prefetch(failing(), depth=2))
