"""ESD ingest: ESD-shaped trees with every quirk of the copies in circulation, re-runs, interruption, verify."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import soundfile
import soxr

import shards.writer
from fixtures.esd_tree import synth_audio, write_esd_tree
from orchestrator.ingest import main as ingest_main
from shards.esd import ingest_esd
from shards.esd_layout import folder_labels, id_block_emotion, id_split
from shards.parallel import map_ordered
from shards.reader import ShardReader
from shards.schema import EMOTIONS
from shards.source_decode import decode_source
from shards.splits import find_plan, load_plans
from shards.transcripts import read_speaker_info, read_transcript
from shards.verify import verify_corpus
from shards.writer import MANIFEST_NAME

TOP = "Emotion Speech Dataset"
LATIN_TEXT = "Café owner's résumé, naïve façade"
CHINESE_TEXT = "打远一看，它们的确很是美丽，"


@dataclass
class Expected:
    """What an ingest of a test tree must produce."""

    clips: dict[str, dict] = field(default_factory=dict)  # utterance id -> expected row values
    skipped: dict[str, str] = field(default_factory=dict)  # relative path -> a word its reason must contain
    disagreements: set[str] = field(default_factory=set)
    missing_transcripts: set[str] = field(default_factory=set)
    encodings: dict[str, str] = field(default_factory=dict)  # transcript path -> detected encoding


def _expect_written(expected: Expected, root: Path, clips) -> None:
    for clip in clips:
        expected.clips[clip.utterance_id] = {
            "path": clip.path.relative_to(root).as_posix(),
            "speaker": clip.speaker,
            "emotion": clip.emotion,
            "split": clip.split,
            "transcript": clip.transcript,
            "audio": clip.audio,
        }


def _rewrite_transcript(path: Path, encoding: str, edit) -> None:
    """Re-encode a transcript after `edit(lines) -> lines` (lines as text)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_bytes(("\r\n".join(edit(lines)) + "\r\n").encode(encoding))


def _wav_with_unknown_format() -> bytes:
    """A complete RIFF/WAVE file whose 'fmt ' chunk names a codec nobody knows."""
    fmt = struct.pack("<HHIIHH", 0x7777, 1, 16_000, 32_000, 2, 16)
    body = b"WAVEfmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", 8) + bytes(8)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def build_quirky_tree(root: Path) -> Expected:
    """Two layouts in one tree, four transcript encodings, and every kind of bad file."""
    expected = Expected()
    # Original archive layout (split folders) under one extra level, flat layout under two.
    split_clips = write_esd_tree(root, ["0001", "0011"], 3, split_folders=True, top=TOP)
    flat_clips = write_esd_tree(root, ["0002", "0012"], 3, split_folders=False, top=f"ESD/{TOP}")
    _expect_written(expected, root, split_clips + flat_clips)
    base, flat = root / TOP, root / "ESD" / TOP

    # Transcripts: GB2312, UTF-16 with BOM, Latin-1 with accents, UTF-8; one space-separated line each.
    def latin(lines):
        lines = [line.replace("Author of the danger trail", LATIN_TEXT) for line in lines]
        return lines[:-1] + [lines[-1].rsplit("\t", 1)[0] + " Surprise"]

    def chinese_spaced(lines):
        return lines[:-1] + [lines[-1].rsplit("\t", 1)[0] + " 惊喜"]

    _rewrite_transcript(base / "0001" / "0001.txt", "gb2312", chinese_spaced)
    _rewrite_transcript(flat / "0002" / "0002.txt", "utf-16", chinese_spaced)
    _rewrite_transcript(base / "0011" / "0011.txt", "latin-1", latin)
    _rewrite_transcript(flat / "0012" / "0012.txt", "utf-8", lambda lines: lines)
    for clip in expected.clips.values():
        if clip["speaker"] == "0011":
            clip["transcript"] = clip["transcript"].replace("Author of the danger trail", LATIN_TEXT)
    expected.encodings = {
        f"{TOP}/0001/0001.txt": "gb2312",
        f"ESD/{TOP}/0002/0002.txt": "utf-16",
        f"{TOP}/0011/0011.txt": "latin-1",
        f"ESD/{TOP}/0012/0012.txt": "utf-8",
    }

    # A 22.05 kHz clip and a stereo clip (new utterances, so their expected audio is computed here).
    rate_path = base / "0011" / "Angry" / "train" / "0011_000410.wav"
    audio_22k = synth_audio(0.25, seed=7, rate=22_050)
    soundfile.write(rate_path, audio_22k, 22_050, subtype="PCM_16")
    resampled = soxr.resample(audio_22k.astype(np.float64) / 32768, 22_050, 16_000, quality="HQ")
    expected.clips["0011_000410"] = {
        "path": rate_path.relative_to(root).as_posix(),
        "speaker": "0011",
        "emotion": "Angry",
        "split": "train",
        "transcript": "",
        "audio": np.clip(np.rint(resampled * 32768), -32768, 32767).astype(np.int16),
    }
    stereo_path = flat / "0012" / "Sad" / "0012_001120.wav"
    left, right = synth_audio(0.2, seed=8), synth_audio(0.2, seed=9)
    soundfile.write(stereo_path, np.stack([left, right], axis=1), 16_000, subtype="PCM_16")
    mixed = np.rint((left.astype(np.float64) + right) / 2).astype(np.int16)
    expected.clips["0012_001120"] = {
        "path": stereo_path.relative_to(root).as_posix(),
        "speaker": "0012",
        "emotion": "Sad",
        "split": "train",
        "transcript": "",
        "audio": mixed,
    }
    expected.missing_transcripts |= {"0011_000410", "0012_001120"}

    # Bad files: each must be skipped and named, and cost no good clip.
    good_bytes = (base / "0011" / "Neutral" / "train" / "0011_000051.wav").read_bytes()
    bad = {
        f"{TOP}/0011/Angry/train/0011_000400.wav": (b"", "empty"),
        f"{TOP}/0011/Angry/train/0011_000402.wav": (good_bytes[: len(good_bytes) // 2], "truncated"),
        f"ESD/{TOP}/0012/Happy/0012_000800.wav": (b"0012_000800\tnot audio at all\tHappy\n", "not an audio file"),
        f"ESD/{TOP}/0012/Happy/0012_000801.wav": (good_bytes[:30], "truncated"),
        f"{TOP}/0001/Sad/train/0001_001200.wav": (_wav_with_unknown_format(), "undecodable"),
        f"{TOP}/0011/Angry/train/notes.wav": (good_bytes, "file name"),
        f"{TOP}/0011/Angry/train/._0011_000351.wav": (b"\x00\x05\x16\x07macos", "macOS"),
    }
    for rel, (data, reason) in bad.items():
        (root / rel).write_bytes(data)
        expected.skipped[rel] = reason

    # The folder wins over the transcript and the utterance number, and the disagreement is reported.
    moved = flat / "0012" / "Neutral" / "0012_000021.wav"
    moved.rename(flat / "0012" / "Sad" / moved.name)
    expected.clips["0012_000021"].update(emotion="Sad", path=f"ESD/{TOP}/0012/Sad/0012_000021.wav")
    expected.disagreements.add("0012_000021")
    # A split folder wins over the utterance-number rule (offset 21 would be "test").
    relocated = base / "0001" / "Happy" / "test" / "0001_000721.wav"
    (base / "0001" / "Happy" / "train").mkdir(exist_ok=True)
    relocated.rename(base / "0001" / "Happy" / "train" / relocated.name)
    expected.clips["0001_000721"].update(split="train", path=f"{TOP}/0001/Happy/train/0001_000721.wav")

    # The release's ReadMe lists genders for some speakers.
    (base / "ReadMe.txt").write_text("ESD\n\n0001: Chinese Female\n0011: English Male\n")
    return expected


@pytest.fixture(scope="module")
def quirky(tmp_path_factory):
    root = tmp_path_factory.mktemp("esd")
    expected = build_quirky_tree(root)
    out = tmp_path_factory.mktemp("data")
    result = ingest_esd(root, out, workers=1)
    return root, out, expected, result


def test_every_good_clip_is_ingested_exactly(quirky):
    root, out, expected, result = quirky
    reader = ShardReader(out)
    assert sorted(reader.index.utterance_id) == sorted(expected.clips)
    table = pa.concat_tables(
        pa.ipc.open_file(pa.memory_map(str(out / e["path"]))).read_all() for e in reader.manifest["shards"]
    )
    transcripts = dict(zip(table.column("utterance_id").to_pylist(), table.column("transcript").to_pylist()))
    for row, uid in enumerate(reader.index.utterance_id):
        want = expected.clips[uid]
        assert reader.index.speaker[row] == want["speaker"]
        assert reader.index.language[row] == ("zh" if want["speaker"] <= "0010" else "en")
        assert reader.index.emotion[row] == want["emotion"], uid
        assert reader.index.split[row] == want["split"], uid
        assert transcripts[uid] == want["transcript"], uid
        np.testing.assert_array_equal(reader.audio(row), want["audio"], err_msg=uid)


def test_manifest_records_source_hash_duration_and_label(quirky):
    root, out, expected, result = quirky
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert set(manifest["utterances"]) == set(expected.clips)
    for uid, record in manifest["utterances"].items():
        want = expected.clips[uid]
        assert record["path"] == want["path"]
        assert record["sha256"] == hashlib.sha256((root / want["path"]).read_bytes()).hexdigest()
        assert record["num_samples"] == len(want["audio"])
        assert record["seconds"] == pytest.approx(len(want["audio"]) / 16_000, abs=1e-4)
        assert (record["emotion"], record["split"]) == (want["emotion"], want["split"])
    assert manifest["utterances"]["0011_000410"]["converted_from"] == {"sample_rate": 22_050, "channels": 1}
    assert manifest["utterances"]["0012_001120"]["converted_from"] == {"sample_rate": 16_000, "channels": 2}
    for speaker in ("0001", "0002", "0011", "0012"):
        per_emotion = {
            e: sum(1 for c in expected.clips.values() if c["speaker"] == speaker and c["emotion"] == e)
            for e in EMOTIONS
        }
        assert manifest["counts"][speaker] == per_emotion
    assert manifest["num_clips"] == len(expected.clips)


def test_every_bad_file_is_named_with_its_reason(quirky):
    root, out, expected, result = quirky
    skipped = {s["path"]: s["reason"] for s in result.manifest["skipped"]}
    assert set(skipped) == set(expected.skipped)
    for path, word in expected.skipped.items():
        assert word in skipped[path], (path, skipped[path])


def test_transcripts_decode_in_every_encoding_and_labels_disagreements(quirky):
    root, out, expected, result = quirky
    manifest = result.manifest
    assert {t["path"]: t["encoding"] for t in manifest["transcripts"]} == expected.encodings
    assert all(t["num_without_emotion"] == 0 and "unparsed_lines" not in t for t in manifest["transcripts"])
    disagreement = {d["utterance_id"]: d for d in manifest["label_disagreements"]}
    assert set(disagreement) == expected.disagreements
    assert disagreement["0012_000021"] == {
        "utterance_id": "0012_000021",
        "path": f"ESD/{TOP}/0012/Sad/0012_000021.wav",
        "label": "Sad",
        "folder": "Sad",
        "transcript": "Neutral",
        "utterance_number": "Neutral",
    }
    assert set(manifest["missing_transcripts"]) == expected.missing_transcripts


def test_speakers_carry_language_and_gender_and_plans_sit_next_to_the_data(quirky):
    root, out, expected, result = quirky
    assert result.manifest["speakers"] == {
        "0001": {"language": "zh", "gender": "F"},
        "0002": {"language": "zh", "gender": "unknown"},
        "0011": {"language": "en", "gender": "M"},
        "0012": {"language": "en", "gender": "unknown"},
    }
    plans = load_plans(out)
    assert [p.name for p in plans["loso"]] == ["loso-0011", "loso-0012", "loso-0001", "loso-0002"]
    assert "paper" not in plans  # needs 5 English speakers
    assert verify_corpus(out) == []


def test_shards_are_grouped_by_speaker_and_bounded(tmp_path):
    root = tmp_path / "esd"
    write_esd_tree(root, ["0013"], 6, split_folders=False, seconds=0.25)
    manifest = ingest_esd(root, tmp_path / "out", workers=1, max_shard_bytes=30_000).manifest
    assert len(manifest["shards"]) > 1
    for entry in manifest["shards"]:
        table = pa.ipc.open_file(pa.memory_map(str(tmp_path / "out" / entry["path"]))).read_all()
        assert set(table.column("speaker").to_pylist()) == {"0013"}
        assert sum(table.column("num_samples").to_pylist()) * 2 <= 30_000
    assert manifest["num_clips"] == 30


@pytest.mark.parametrize("top", ["", TOP, f"ESD/{TOP}"])
@pytest.mark.parametrize("split_folders", [True, False])
def test_both_layouts_at_any_depth_give_the_official_split(tmp_path, top, split_folders):
    clips = write_esd_tree(tmp_path / "esd", ["0003", "0014"], 6, split_folders=split_folders, top=top)
    reader = ShardReader(ingest_esd(tmp_path / "esd", tmp_path / "out", workers=1).out_dir)
    rows = {u: i for i, u in enumerate(reader.index.utterance_id)}
    assert len(rows) == len(clips)
    for clip in clips:
        row = rows[clip.utterance_id]
        assert (reader.index.emotion[row], reader.index.split[row]) == (clip.emotion, clip.split)
    assert {reader.index.split[rows[c.utterance_id]] for c in clips} == {"train", "evaluation", "test"}


def test_official_split_and_label_rules_follow_the_utterance_number():
    assert [id_split(n) for n in (1, 20, 21, 50, 51, 350)] == ["evaluation"] * 2 + ["test"] * 2 + ["train"] * 2
    assert [id_split(350 * 4 + n) for n in (1, 21, 51)] == ["evaluation", "test", "train"]
    assert [id_block_emotion(n) for n in (1, 350, 351, 701, 1051, 1401, 1750)] == [
        "Neutral",
        "Neutral",
        "Angry",
        "Happy",
        "Sad",
        "Surprise",
        "Surprise",
    ]
    # A root that happens to sit below a folder named "test" does not make clips test clips.
    assert folder_labels(("test", "ESD", "0011", "Angry")) == ("Angry", None)
    assert folder_labels(("0011", "Angry", "evaluation")) == ("Angry", "evaluation")


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "gb2312", "gbk", "gb18030"])
def test_chinese_transcripts_decode_in_every_encoding(encoding):
    text = f"0001_000001\t{CHINESE_TEXT}\t中立\n0001_000351\t{CHINESE_TEXT}\t生气\n0001_000701 {CHINESE_TEXT} 快乐\n"
    transcript = read_transcript(text.encode(encoding), language="zh")
    assert {u: (line.text, line.emotion) for u, line in transcript.lines.items()} == {
        "0001_000001": (CHINESE_TEXT, "Neutral"),
        "0001_000351": (CHINESE_TEXT, "Angry"),
        "0001_000701": (CHINESE_TEXT, "Happy"),
    }


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "latin-1", "cp1252"])
@pytest.mark.parametrize("language", ["en", None])
def test_english_transcripts_decode_in_every_encoding(encoding, language):
    text = f"0011_001051\t{LATIN_TEXT}\tSad\n0011_001401\tWhat a surprise Surprise\n0011_000002\tNo label here\n"
    transcript = read_transcript(text.encode(encoding), language=language)
    assert {u: (line.text, line.emotion) for u, line in transcript.lines.items()} == {
        "0011_001051": (LATIN_TEXT, "Sad"),
        "0011_001401": ("What a surprise", "Surprise"),
        "0011_000002": ("No label here", None),
    }


@pytest.mark.parametrize("text", ["Hélène Müller sings", "Crème brûlée stands"])
def test_latin1_that_is_also_valid_gbk_is_read_as_latin1(text):
    data = f"0011_000701\t{text}\tHappy\n".encode("latin-1")
    data.decode("gbk")  # the ambiguity this test is about
    for language in ("en", None):
        transcript = read_transcript(data, language=language)
        assert transcript.encoding == "latin-1" and transcript.lines["0011_000701"].text == text


def test_speaker_info_gives_genders():
    readme = "0001: Chinese Female\n0004: Chinese Male\n0011\tEnglish\tMale\nunrelated 0012 female\n"
    assert read_speaker_info(readme.encode("utf-16")) == {"0001": "F", "0004": "M", "0011": "M"}


def test_a_duplicate_keeps_the_first_good_copy(tmp_path):
    root = tmp_path / "esd"
    clips = write_esd_tree(root, ["0015"], 2, split_folders=False, top="")
    original = clips[0].path
    copy_dir = root / "backup" / "0015" / "Neutral"
    copy_dir.mkdir(parents=True)
    (copy_dir / original.name).write_bytes(original.read_bytes())
    original.write_bytes(original.read_bytes()[:60])  # the copy found first is truncated
    manifest = ingest_esd(root, tmp_path / "out", workers=1).manifest
    assert manifest["utterances"][clips[0].utterance_id]["path"] == f"backup/0015/Neutral/{original.name}"
    skipped = {s["path"]: s["reason"] for s in manifest["skipped"]}
    assert skipped == {original.relative_to(root).as_posix(): skipped[original.relative_to(root).as_posix()]}
    assert "truncated" in skipped[original.relative_to(root).as_posix()]
    assert manifest["num_clips"] == len(clips)


def _shard_stats(out: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "shards").iterdir()}


def test_rerun_changes_nothing_and_a_changed_file_reprocesses_only_its_speaker(tmp_path):
    root, out = tmp_path / "esd", tmp_path / "out"
    clips = write_esd_tree(root, ["0004", "0016", "0017"], 2, split_folders=True)
    first = ingest_esd(root, out, workers=2)
    manifest_bytes, shard_stats = (out / MANIFEST_NAME).read_bytes(), _shard_stats(out)

    again = ingest_esd(root, out, workers=2)
    assert (again.reused, again.processed) == (["0004", "0016", "0017"], [])
    assert (out / MANIFEST_NAME).read_bytes() == manifest_bytes
    assert _shard_stats(out) == shard_stats

    # Same bytes, new mtime (a fresh extraction): still reused, by hash.
    os.utime(clips[0].path, ns=(1, 1))
    assert ingest_esd(root, out, workers=1).processed == []

    changed = next(c for c in clips if c.speaker == "0016")
    soundfile.write(changed.path, synth_audio(0.3, seed=99), 16_000, subtype="PCM_16")
    third = ingest_esd(root, out, workers=1)
    assert (third.reused, third.processed) == (["0004", "0017"], ["0016"])
    assert third.manifest["content_hash"] != first.manifest["content_hash"]
    assert third.manifest["utterances"][changed.utterance_id]["num_samples"] == int(0.3 * 16_000)
    old_0016 = {n for n in shard_stats if "-0016-" in n}
    assert not old_0016 & set(_shard_stats(out))  # the replaced speaker's old shards are gone
    assert {n: s for n, s in _shard_stats(out).items() if "-0016-" not in n} == {
        n: s for n, s in shard_stats.items() if "-0016-" not in n
    }
    assert verify_corpus(out) == []

    # A transcript re-encoded with the same lines changes nothing; an edited line re-processes its speaker.
    transcript = root / TOP / "0017" / "0017.txt"
    _rewrite_transcript(transcript, "utf-16", lambda lines: lines)
    assert ingest_esd(root, out, workers=1).processed == []
    transcript.write_text(transcript.read_text(encoding="utf-16").replace("line 1.", "line one."), encoding="utf-16")
    assert ingest_esd(root, out, workers=1).processed == ["0017"]


def _interrupt_on_shard(monkeypatch, number: int):
    """Make the `number`-th shard write die half-way, like a killed process: a partial temp file, no shard."""
    real_write, calls = shards.writer.write_shard, []

    def dying_write(path, clips, *dimensions):
        calls.append(path)
        if len(calls) == number:
            (path.parent / f".{path.name}.killed.tmp").write_bytes(b"ARROW1\x00\x00half a shard")
            raise KeyboardInterrupt
        return real_write(path, clips, *dimensions)

    monkeypatch.setattr(shards.writer, "write_shard", dying_write)


def _all_shards_complete(out: Path) -> bool:
    for path in (out / "shards").glob("*.arrow"):
        pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    return True


def test_an_interrupted_ingest_leaves_no_half_shard_and_the_rerun_completes(tmp_path, monkeypatch):
    root, out = tmp_path / "esd", tmp_path / "out"
    write_esd_tree(root, ["0005", "0018", "0019"], 2, split_folders=False)
    _interrupt_on_shard(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        ingest_esd(root, out, workers=1)
    monkeypatch.undo()
    assert not (out / MANIFEST_NAME).exists()
    assert _all_shards_complete(out) and len(list((out / "shards").glob("*.arrow"))) == 1

    resumed = ingest_esd(root, out, workers=1)
    assert (resumed.reused, resumed.processed) == (["0005"], ["0018", "0019"])
    assert not list(out.rglob("*.tmp"))
    clean = ingest_esd(root, tmp_path / "clean", workers=1)
    assert resumed.manifest["content_hash"] == clean.manifest["content_hash"]
    assert verify_corpus(out) == []


def test_an_interrupted_reingest_keeps_the_previous_corpus_valid(tmp_path, monkeypatch):
    root, out = tmp_path / "esd", tmp_path / "out"
    clips = write_esd_tree(root, ["0006", "0020"], 2, split_folders=False)
    before = ingest_esd(root, out, workers=1).manifest
    soundfile.write(clips[-1].path, synth_audio(0.2, seed=5), 16_000, subtype="PCM_16")
    _interrupt_on_shard(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        ingest_esd(root, out, workers=1)
    monkeypatch.undo()
    assert json.loads((out / MANIFEST_NAME).read_text())["content_hash"] == before["content_hash"]
    assert verify_corpus(out) == []  # readers still see the old, complete corpus
    after = ingest_esd(root, out, workers=1)
    assert after.processed == ["0020"] and verify_corpus(out) == []


def test_verify_catches_a_corrupted_shard_and_a_tampered_manifest(tmp_path, capsys):
    root, out = tmp_path / "esd", tmp_path / "out"
    write_esd_tree(root, ["0007", "0013"], 2, split_folders=True)
    assert ingest_main(["esd", str(root), "--out", str(out), "--verify", "--workers", "1"]) == 0
    assert "every shard" in capsys.readouterr().out

    manifest = json.loads((out / MANIFEST_NAME).read_text())
    shard = out / manifest["shards"][0]["path"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit of audio: only the hash can tell
    shard.write_bytes(bytes(data))
    assert ingest_main(["verify", str(out)]) == 1
    assert "sha256 differs" in capsys.readouterr().out

    shard.write_bytes(bytes(data[: len(data) // 3]))
    assert ingest_main(["verify", str(out)]) == 1
    assert "not a readable Arrow file" in capsys.readouterr().out

    # A re-run repairs it: the speaker's shards no longer match, so it is processed again.
    assert ingest_main(["esd", str(root), "--out", str(out), "--verify", "--workers", "1"]) == 0
    capsys.readouterr()
    uid = next(iter(manifest["utterances"]))
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    manifest["utterances"][uid]["emotion"] = "Happy" if manifest["utterances"][uid]["emotion"] != "Happy" else "Sad"
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert ingest_main(["verify", str(out), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert any(uid in p and "emotion" in p for p in report["problems"])


def test_the_cli_summarises_clips_and_skips(tmp_path, capsys):
    root = tmp_path / "esd"
    write_esd_tree(root, ["0008"], 1, split_folders=False)
    (root / TOP / "0008" / "Sad" / "0008_001099.wav").write_bytes(b"")
    assert ingest_main(["esd", str(root), "--out", str(tmp_path / "out"), "--workers", "1"]) == 0
    captured = capsys.readouterr()
    assert "ingested 5 clips" in captured.out
    assert "empty file: 1" in captured.out and "0008_001099.wav" in captured.out
    assert "found 6 clip files" in captured.err
    with pytest.raises(SystemExit) as exited:  # a usage error: status 2, one `prog: error:` line
        ingest_main(["esd", str(tmp_path / "out"), "--out", str(tmp_path / "elsewhere")])
    assert exited.value.code == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert line.startswith("python -m orchestrator.ingest: error: ") and "no ESD clips" in line


def test_decoding_in_parallel_gives_the_same_corpus(tmp_path):
    root = tmp_path / "esd"
    write_esd_tree(root, ["0009", "0010"], 2, split_folders=True)
    serial = ingest_esd(root, tmp_path / "serial", workers=1).manifest
    parallel = ingest_esd(root, tmp_path / "parallel", workers=2).manifest
    assert serial["content_hash"] == parallel["content_hash"]


def crash_on_seven(item: int) -> int:
    if item == 7:
        os._exit(1)  # what a segfault in a decoder library looks like to the pool
    return item * 10


def test_a_file_that_kills_its_decoder_costs_only_itself():
    results = list(map_ordered(crash_on_seven, list(range(20)), workers=2, on_crash=lambda item: -item, chunksize=2))
    assert results == [-7 if i == 7 else i * 10 for i in range(20)]


def test_a_missing_file_is_skipped_not_fatal(tmp_path):
    result = decode_source((str(tmp_path / "gone.wav"), "gone.wav"))
    assert result.reason.startswith("unreadable") and result.audio is None


def test_a_trial_runs_on_ingested_esd_like_on_the_demo_corpus(tmp_path, demo_dir):
    from workers.core.reporting import ListReporter
    from workers.core.tracking import NullLogger
    from workers.finetune.config import TrialConfig
    from workers.finetune.recipe import run_trial

    root, out = tmp_path / "esd", tmp_path / "out"
    write_esd_tree(root, ["0001", "0002", "0011", "0012", "0013", "0014", "0015"], 2, split_folders=False)
    manifest = ingest_esd(root, out, workers=1).manifest
    demo = json.loads((demo_dir / MANIFEST_NAME).read_text())
    assert set(demo) <= set(manifest) and manifest["schema"] == demo["schema"]
    plan = find_plan(load_plans(out), "paper")
    config = TrialConfig(
        data_dir=str(out),
        start="tiny",
        schedule="head_only",
        epoch_scale=0.2,
        batch_size=8,
        eval_every_steps=2,
        **plan.as_config(),
    )
    metrics = run_trial(config, NullLogger(), ListReporter())
    assert {"test_en/accuracy", "test_zh/accuracy"} <= set(metrics)


def test_labels_and_languages_without_folders_or_esd_ids(tmp_path):
    root = tmp_path / "esd"
    write_esd_tree(root, ["0011"], 1, split_folders=False, top="")

    def wav(rel: str) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(root / rel, synth_audio(0.1, seed=1), 16_000, subtype="PCM_16")

    wav("0021/0021_000351.wav")  # not an ESD speaker id: its English transcript tells the language
    (root / "0021" / "0021.txt").write_text("0021_000351\tHello there\tAngry\n")
    wav("0030/Sad/0030_001051.wav")  # no transcript: language unknown
    wav("0011/0011_000002.wav")  # no emotion folder, no transcript line: the utterance number labels it
    wav("0011/0011_002000.wav")  # ... and beyond ESD's numbering nothing does
    manifest = ingest_esd(root, tmp_path / "out", workers=1).manifest
    assert manifest["speakers"]["0021"]["language"] == "en" and "0030" not in manifest["speakers"]
    assert manifest["utterances"]["0021_000351"]["emotion"] == "Angry"
    assert manifest["utterances"]["0021_000351"]["label_from"] == "transcript"
    assert (
        manifest["utterances"]["0011_000002"]["emotion"],
        manifest["utterances"]["0011_000002"]["label_from"],
        manifest["utterances"]["0011_000002"]["split"],
    ) == ("Neutral", "utterance_number", "evaluation")
    skipped = {s["path"]: s["reason"] for s in manifest["skipped"]}
    assert set(skipped) == {"0030/Sad/0030_001051.wav", "0011/0011_002000.wav"}
    assert "language" in skipped["0030/Sad/0030_001051.wav"] and "no emotion" in skipped["0011/0011_002000.wav"]


def test_parallel_map_keeps_order_over_many_chunks():
    assert list(map_ordered(abs, list(range(-500, 500)), workers=2, on_crash=None, chunksize=7)) == [
        abs(i) for i in range(-500, 500)
    ]


def test_symlinks_loops_and_odd_names_neither_stop_nor_double_count(tmp_path):
    root, elsewhere = tmp_path / "esd", tmp_path / "elsewhere"
    clips = write_esd_tree(elsewhere, ["0016"], 1, split_folders=False, top="")
    write_esd_tree(root, ["0017"], 1, split_folders=False, top="")
    (root / "0016").symlink_to(elsewhere / "0016", target_is_directory=True)  # a speaker linked in
    (root / "0017" / "loop").symlink_to(root, target_is_directory=True)  # a link back up
    (root / "0017" / "Sad" / "0017_001060.wav").symlink_to(tmp_path / "gone.wav")  # dangling
    odd = root / os.fsdecode(b"copy-\xb8\xb1\xb1\xbe")  # a GBK folder name read as bytes
    (odd / "Happy").mkdir(parents=True)
    (odd / "Happy" / "0017_000709.wav").write_bytes(clips[0].path.read_bytes())
    manifest = ingest_esd(root, tmp_path / "out", workers=1).manifest
    assert manifest["counts"]["0016"] == dict.fromkeys(EMOTIONS, 1)
    assert manifest["counts"]["0017"] == {**dict.fromkeys(EMOTIONS, 1), "Happy": 2}
    assert manifest["utterances"]["0017_000709"]["path"] == "copy-\ufffd\ufffd\ufffd\ufffd/Happy/0017_000709.wav"
    assert [s["path"] for s in manifest["skipped"]] == ["0017/Sad/0017_001060.wav"]
    assert verify_corpus(tmp_path / "out") == []


def test_bad_flags_and_missing_paths_are_usage_errors(tmp_path, capsys):
    for argv in (
        ["esd", str(tmp_path), "--out", str(tmp_path / "out"), "--workers", "0"],
        ["verify", str(tmp_path / "nowhere")],
    ):
        with pytest.raises(SystemExit) as exited:
            ingest_main(argv)
        assert exited.value.code == 2
        lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        assert len(lines) == 1 and lines[0].startswith("python -m orchestrator.ingest: error: ")
