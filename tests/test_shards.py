import json

import numpy as np
import pyarrow as pa

from shards.demo import DEMO_SPEAKERS, build_demo_corpus, demo_clips
from shards.reader import ShardReader
from shards.schema import CLIP_SCHEMA, EMOTIONS
from shards.writer import MANIFEST_NAME, ShardWriter, file_sha256


def test_demo_corpus_is_deterministic_by_seed(tmp_path):
    first = build_demo_corpus(tmp_path / "a", seed=3, clips_per_emotion=2)
    again = build_demo_corpus(tmp_path / "b", seed=3, clips_per_emotion=2)
    other = build_demo_corpus(tmp_path / "c", seed=4, clips_per_emotion=2)
    assert first["content_hash"] == again["content_hash"]
    assert first["content_hash"] != other["content_hash"]


def test_demo_corpus_has_esd_shape(demo_dir):
    manifest = json.loads((demo_dir / MANIFEST_NAME).read_text())
    languages = [m["language"] for m in manifest["speakers"].values()]
    assert languages.count("en") >= 6 and languages.count("zh") >= 3
    assert all(manifest["counts"][s] == dict.fromkeys(EMOTIONS, 6) for s in DEMO_SPEAKERS)
    assert manifest["num_clips"] == len(DEMO_SPEAKERS) * len(EMOTIONS) * 6


def test_every_shard_matches_its_manifest_hash_and_schema(demo_dir):
    manifest = json.loads((demo_dir / MANIFEST_NAME).read_text())
    for entry in manifest["shards"]:
        path = demo_dir / entry["path"]
        assert file_sha256(path) == entry["sha256"]
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
        assert table.schema.equals(CLIP_SCHEMA)
        assert table.num_rows == entry["num_rows"]
        # grouped by language and speaker
        assert len(set(table.column("speaker").to_pylist())) == 1


def test_reader_returns_the_written_audio(demo_dir):
    reader = ShardReader(demo_dir)
    written = {c.utterance_id: c for c in demo_clips(seed=0, clips_per_emotion=6)}
    assert len(reader) == len(written)
    for row in range(0, len(reader), 17):
        clip = written[reader.index.utterance_id[row]]
        np.testing.assert_array_equal(reader.audio(row), clip.audio)
        assert reader.index.emotion[row] == clip.emotion
        assert reader.index.num_samples[row] == len(clip.audio)


def test_shards_are_bounded_and_leave_no_temp_files(tmp_path):
    clips = list(demo_clips(seed=0, clips_per_emotion=4))
    with ShardWriter(tmp_path, speakers=DEMO_SPEAKERS, max_shard_bytes=200_000) as writer:
        for clip in clips:
            writer.add(clip)
    manifest = writer.close()
    assert len(manifest["shards"]) > len(DEMO_SPEAKERS)  # the bound split speakers over shards
    assert not list(tmp_path.rglob("*.tmp"))
    assert len(ShardReader(tmp_path)) == len(clips)


def test_open_reader_is_shared_until_the_corpus_changes(tmp_path):
    from shards.reader import open_reader

    build_demo_corpus(tmp_path, seed=0, clips_per_emotion=1)
    first = open_reader(tmp_path)
    assert open_reader(tmp_path) is first
    build_demo_corpus(tmp_path, seed=0, clips_per_emotion=2)  # rewrites the manifest
    reopened = open_reader(tmp_path)
    assert reopened is not first and len(reopened) == 2 * len(first)
