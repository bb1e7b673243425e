"""A trial never opens shards that differ from their manifest; each shard version is hashed once per node."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import shards.integrity as integrity
from shards.integrity import ShardIntegrityError, verify_shards_once
from shards.reader import open_reader
from shards.writer import read_manifest


@pytest.fixture
def corpus_copy(demo_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("EMOTION_SWEEP_CACHE", str(tmp_path / "cache"))  # no marker from another test
    copy = tmp_path / "corpus"
    shutil.copytree(demo_dir, copy)
    return copy


def corrupt_middle(path: Path, num_bytes: int = 256) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + num_bytes] = bytes(b ^ 0xFF for b in data[middle : middle + num_bytes])
    path.write_bytes(bytes(data))


def test_opening_a_corpus_with_a_corrupted_shard_for_training_names_the_shard(corpus_copy):
    shard = corpus_copy / read_manifest(corpus_copy)["shards"][-1]["path"]
    corrupt_middle(shard)
    with pytest.raises(ShardIntegrityError, match=f"{shard.name}.*corrupt"):
        open_reader(corpus_copy)


def test_a_clean_copy_opens_and_is_keyed_on_its_verified_bytes(corpus_copy):
    reader = open_reader(corpus_copy)
    assert reader.verified_hash == verify_shards_once(corpus_copy)
    assert reader.content_hash == reader.verified_hash == read_manifest(corpus_copy)["content_hash"]


def test_the_second_open_skips_hashing(corpus_copy, monkeypatch):
    hashed: list[Path] = []
    real_sha256 = integrity.file_sha256
    monkeypatch.setattr(integrity, "file_sha256", lambda path: hashed.append(path) or real_sha256(path))
    open_reader(corpus_copy)
    num_shards = len(read_manifest(corpus_copy)["shards"])
    assert len(hashed) == num_shards
    open_reader(corpus_copy)
    assert len(hashed) == num_shards  # the markers vouch for the unchanged shards


def test_a_shard_changed_after_its_check_is_hashed_again_and_refused(corpus_copy):
    open_reader(corpus_copy)
    shard = corpus_copy / read_manifest(corpus_copy)["shards"][0]["path"]
    corrupt_middle(shard)  # a new mtime: a new shard version
    with pytest.raises(ShardIntegrityError, match=shard.name):
        open_reader(corpus_copy)
