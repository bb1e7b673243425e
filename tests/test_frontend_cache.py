"""The frozen conv front end's cache: a trial trained from it equals one trained without it, trials share it
(computed once, then hits), and a damaged or partial segment is rebuilt, never read."""

import json
import os

import numpy as np
import pytest
import torch
from test_recipe import RecordingLogger

from shards.batching import PlannedBatch
from shards.reader import ShardReader
from workers.core.reporting import ListReporter
from workers.finetune import encoders
from workers.finetune.config import TrialConfig
from workers.finetune.encoders.waveform.forward import encode_audio, normalize_audio
from workers.finetune.encoders.waveform.frames import (
    encode_frames,
    frames_for_samples,
    frontend_output,
    frontend_rounded,
    samples_for_frames,
)
from workers.finetune.frame_source import FrameCrop, frame_batch
from workers.finetune.frontend_cache import open_frontend_cache
from workers.finetune.model import build_encoder
from workers.finetune.recipe import run_trial

CHANNELS = 4


@pytest.fixture(autouse=True)
def own_markers(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOTION_SWEEP_CACHE", str(tmp_path / "node-cache"))  # verified-segment markers of this test


def trial_config(demo_dir, tmp_path, **overrides) -> TrialConfig:
    """An all_but_cnn stage with dropout and SpecAugment on (what the cached path must still draw), 8 steps."""
    values = dict(
        data_dir=str(demo_dir),
        train_speakers=("0011", "0012"),
        eval_sets={"test_en": ("0015",)},
        val_fraction=0.25,
        eval_every_steps=2,
        prefetch_batches=2,
        feature_cache_dir=str(tmp_path / "features"),
        stages=({"trainable": "all_but_cnn", "epochs": 0.67, "learning_rate": 2e-3, "batch_size": 4},),
        hidden_dropout=0.1,
        mask_time_prob=0.3,
        mask_time_length=4,
        layerdrop=0.0,
        checkpoint_on_best=False,
    )
    values.update(overrides)
    return TrialConfig(**values)


def trained(cfg: TrialConfig) -> tuple[dict, RecordingLogger]:
    logger = RecordingLogger()
    metrics = run_trial(cfg, logger, ListReporter(), device=torch.device("cpu"))
    return metrics, logger


def val_losses(logger: RecordingLogger) -> list[float]:
    return [m["val/loss"] for _, m in logger.rounds()]


def test_a_trial_from_the_cached_front_end_equals_one_without_it_and_the_next_trial_hits(demo_dir, tmp_path):
    without, without_log = trained(trial_config(demo_dir, tmp_path, cache_frontend=False))
    cached, cached_log = trained(trial_config(demo_dir, tmp_path))
    again, again_log = trained(trial_config(demo_dir, tmp_path))

    assert without_log.tags["frontend_cache/stage0"] == "not used: cache_frontend=False"
    clips = 60  # the two training speakers' train and val clips
    assert cached_log.tags["frontend_cache/stage0"] == f"computed {clips} clips, hit 0"
    assert again_log.tags["frontend_cache/stage0"] == f"hit {clips} clips"  # nothing computed again

    # Same seed, same metrics: every evaluation round and every final metric. The conv's own float rounding
    # differs with the batch it runs in (a rare fp16 step apart), so not bit for bit; a skipped SpecAugment,
    # a missing dropout draw or a wrong clip moves the losses by 1e-2 and more.
    assert len(val_losses(cached_log)) == 4
    assert val_losses(cached_log) == pytest.approx(val_losses(without_log), rel=1e-4, abs=1e-5)
    assert set(cached) == set(without)
    for name, value in without.items():
        if name.endswith("_seconds"):  # wall times
            continue
        assert cached[name] == pytest.approx(value, rel=1e-4, abs=1e-5), name
    # Two trials from the cache: the same values, bit for bit.
    assert val_losses(again_log) == val_losses(cached_log)
    assert {k: v for k, v in again.items() if not k.endswith("_seconds")} == {
        k: v for k, v in cached.items() if not k.endswith("_seconds")
    }


@pytest.mark.parametrize("model_type", ["wav2vec2", "hubert", "wavlm", "data2vec-audio"])
def test_the_forward_from_frames_is_the_encoders_own(model_type):
    """Projection, SpecAugment (numpy's draws), transformer and the frame mask, as HF's forward on the audio."""
    torch.manual_seed(0)
    overrides = {"mask_time_prob": 0.3, "mask_time_length": 3, "apply_spec_augment": True}
    encoder = build_encoder(encoders.tiny_config(model_type), overrides).train()
    encoder.feature_extractor.requires_grad_(False)
    lengths = torch.tensor([9000, 7000, 4000])
    audio = (torch.randn(3, 9000) * 3000).short()
    values, _ = normalize_audio(audio, lengths)
    frames = torch.as_tensor(frames_for_samples(encoder.config, lengths.numpy()))
    assert (samples_for_frames(encoder.config, frames) <= lengths).all()
    assert torch.equal(
        torch.as_tensor(frames_for_samples(encoder.config, samples_for_frames(encoder.config, frames))), frames
    )
    clips = [frontend_output(encoder, values[i : i + 1, : int(n)])[0] for i, n in enumerate(lengths)]
    features = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True)

    torch.manual_seed(1), np.random.seed(1)
    with frontend_rounded(encoder):
        (live,), live_mask = encode_audio(encoder, audio, lengths)
    torch.manual_seed(1), np.random.seed(1)
    (given,), given_mask = encode_frames(encoder, features, frames)
    assert torch.equal(given_mask, live_mask)
    torch.testing.assert_close(given[given_mask], live[live_mask], atol=2e-3, rtol=1e-3)
    torch.manual_seed(1), np.random.seed(2)  # other SpecAugment masks: other outputs (the masks apply)
    (masked_otherwise,), _ = encode_frames(encoder, features, frames)
    assert not torch.allclose(masked_otherwise[given_mask], live[live_mask], atol=2e-3, rtol=1e-3)


def fake_frontend(calls: list):
    """Deterministic fp16 'front-end output' per row (row + 1 frames); notes which rows it computed."""

    def compute(rows):
        calls.extend(rows.tolist())
        for start in range(0, len(rows), 3):
            chunk = rows[start : start + 3]
            yield chunk, [clip_of(row) for row in chunk]

    return compute


def clip_of(row: int) -> np.ndarray:
    return (np.arange((row + 1) * CHANNELS, dtype=np.float32).reshape(row + 1, CHANNELS) + row / 8).astype(np.float16)


def open_rows(directory, rows, calls):
    return open_frontend_cache(directory, "entry", np.asarray(rows), CHANNELS, fake_frontend(calls))


def segments(directory) -> list:
    return sorted((directory / "entry").glob("segment-*.arrow"))


def test_clips_are_computed_once_and_damaged_or_partial_segments_rebuilt(tmp_path):
    directory, calls = tmp_path / "frontend", []
    table, report = open_rows(directory, range(10), calls)
    assert (report.hits, report.computed) == (0, 10) and sorted(calls) == list(range(10))
    table, report = open_rows(directory, range(14), calls)  # only the clips it lacks
    assert (report.hits, report.computed) == (10, 4) and sorted(calls) == [*range(10), *range(10, 14)]
    calls.clear()
    table, report = open_rows(directory, [3, 12], calls)
    assert (report.hits, report.computed, calls) == (2, 0, [])
    assert np.array_equal(table.clip(12), clip_of(12)) and table.num_frames(3) == 4
    first, second = segments(directory)
    ten_rows = first if len(json.loads(first.with_suffix(".json").read_text())["rows"]) == 10 else second

    # Same size, other bytes (a damaged copy put in its place): hashed again, thrown away, recomputed.
    damaged = bytearray(ten_rows.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    replacement = ten_rows.with_name("replacement.tmp")
    replacement.write_bytes(bytes(damaged))
    os.replace(replacement, ten_rows)
    table, report = open_rows(directory, range(14), calls)
    assert (report.hits, report.computed, report.discarded_segments) == (4, 10, 1)
    assert sorted(calls) == list(range(10)) and "rebuilt 1 damaged segment" in report.describe()
    assert all(np.array_equal(table.clip(r), clip_of(r)) for r in range(14))

    # Truncated, an unreadable commit record, and a killed writer's leftovers (no record; a temporary file).
    calls.clear()
    for path in segments(directory):
        path.write_bytes(path.read_bytes()[:-100]) if 'rows": [0' in path.with_suffix(".json").read_text() else None
    stray = directory / "entry" / "segment-0000killed.arrow"
    stray.write_bytes(segments(directory)[0].read_bytes())
    (directory / "entry" / ".segment-0000killed.arrow.123.tmp").write_bytes(b"half")
    table, report = open_rows(directory, range(14), calls)
    assert report.discarded_segments == 1 and sorted(calls) == list(range(10))
    assert not stray.exists() and not list((directory / "entry").glob("*.tmp"))
    record = next(p for p in (directory / "entry").glob("segment-*.json") if 'rows": [10' in p.read_text())
    record.write_text(record.read_text()[:20])
    calls.clear()
    table, report = open_rows(directory, range(14), calls)
    assert report.discarded_segments == 1 and sorted(calls) == [10, 11, 12, 13]
    assert all(np.array_equal(table.clip(r), clip_of(r)) for r in range(14))


def test_crops_in_frames_start_at_the_crop_starts_frame(demo_dir, tmp_path):
    reader = ShardReader(demo_dir)
    rows = np.array([0, 1])
    table, _ = open_rows(tmp_path, rows, [])
    index = reader.index
    # Clip 1 has 2 frames (fake): a crop of 1 frame starting at sample 3 x hop takes its last frame (clamped).
    plan = PlannedBatch(rows, crop_starts=np.array([0, 3 * 160]))
    crop = FrameCrop(max_samples=int(index.num_samples[rows].min()) - 1, frames=1, hop=160)
    batch = frame_batch(table, index, plan, crop, pin=False)
    assert batch.frame_lengths.tolist() == [1, 1]
    assert np.array_equal(batch.features[1, 0].numpy(), clip_of(1)[1])
    whole = frame_batch(table, index, PlannedBatch(rows), FrameCrop(0, 0, 160), pin=False)
    assert whole.frame_lengths.tolist() == [1, 2] and np.array_equal(whole.features[1].numpy(), clip_of(1))
