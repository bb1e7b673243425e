"""Any corpus: the table ingest and each named release, from trees in the release's own layout."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures.cremad_tree import write_cremad_tree
from fixtures.emodb_tree import write_emodb_tree
from fixtures.iemocap_tree import NO_AUDIO, OVERLAPPING, write_iemocap_tree
from fixtures.msp_podcast_tree import write_msp_podcast_tree
from fixtures.ravdess_tree import write_ravdess_tree
from fixtures.table_tree import LABEL_MAP, write_table_tree
from orchestrator.ingest import main as ingest_main
from shards.corpora import CREMAD_EMOTIONS, EMODB_EMOTIONS, MSP_EMOTIONS, RAVDESS_EMOTIONS, RELEASES
from shards.corpus import ingest_corpus
from shards.reader import ShardReader
from shards.splits import SpeakerLeakError, corpus_plans, find_plan, load_plans, speaker_folds
from shards.table import UnmappedLabelsError, parse_label_map, scan_table
from shards.verify import verify_corpus

# A corpus's labels in its manifest, in the order its release documents them.
RELEASE_LABELS = {
    "ravdess": tuple(RAVDESS_EMOTIONS.values()),
    "cremad": tuple(CREMAD_EMOTIONS.values()),
    "emodb": tuple(EMODB_EMOTIONS.values()),
    "iemocap": ("neu", "hap", "ang", "sad"),
    "msp_podcast": tuple(MSP_EMOTIONS.values()),
}
WRITERS = {
    "ravdess": write_ravdess_tree,
    "cremad": write_cremad_tree,
    "emodb": write_emodb_tree,
    "iemocap": write_iemocap_tree,
    "msp_podcast": write_msp_podcast_tree,
}


def assert_ingested_as_expected(out, tree, labels):
    """Every good clip kept with its label, speaker and split; every bad one named with its reason."""
    reader = ShardReader(out)
    manifest = reader.manifest
    assert reader.labels == tuple(labels)
    kept = {
        u: (reader.labels[label], speaker, split)
        for u, label, speaker, split in zip(
            reader.index.utterance_id, reader.index.label, reader.index.speaker, reader.index.split
        )
    }
    assert kept == tree.good
    named = {x.get("line", x["path"]): x["reason"] for x in manifest["skipped"]}
    assert set(named) == set(tree.bad), (sorted(map(str, named)), sorted(map(str, tree.bad)))
    for where, words in tree.bad.items():
        assert words in named[where], (where, named[where])
    for speaker, gender in tree.genders.items():
        if speaker in manifest["speakers"]:
            assert manifest["speakers"][speaker]["gender"] == gender
    assert verify_corpus(out) == []
    return manifest


@pytest.mark.parametrize("name", list(WRITERS))
def test_each_release_keeps_every_good_clip_and_names_every_bad_file(tmp_path, name):
    tree = WRITERS[name](tmp_path / name)
    out = tmp_path / "out"
    result = ingest_corpus(RELEASES[name].scan(tree.root), out, workers=1)
    manifest = assert_ingested_as_expected(out, tree, RELEASE_LABELS[name])
    assert manifest["source"]["kind"] == name
    assert set(manifest["speakers"]) <= set(result.processed)  # a speaker with no good clip is processed, not kept
    # A re-run with nothing changed decodes nothing and writes the same corpus.
    again = ingest_corpus(RELEASES[name].scan(tree.root), out, workers=1)
    assert again.num_decoded_files == 0 and again.reused == result.processed
    assert again.manifest["content_hash"] == manifest["content_hash"]


def test_release_languages_and_speakers(tmp_path):
    emodb = write_emodb_tree(tmp_path / "emodb")
    ingest_corpus(RELEASES["emodb"].scan(emodb.root), tmp_path / "e", workers=1)
    speakers = ShardReader(tmp_path / "e").manifest["speakers"]
    assert {s: m["language"] for s, m in speakers.items()} == {"03": "de", "08": "de", "16": "de"}
    ravdess = write_ravdess_tree(tmp_path / "ravdess")
    manifest = ingest_corpus(RELEASES["ravdess"].scan(ravdess.root), tmp_path / "r", workers=1).manifest
    assert set(manifest["speakers"]) == {"Actor_01", "Actor_02", "Actor_18"}
    # RAVDESS is 48 kHz: converted to 16 kHz on the way in, and recorded as such.
    assert all(r["converted_from"]["sample_rate"] == 48_000 for r in manifest["utterances"].values())


def test_iemocap_sessions_overlaps_and_label_options(tmp_path):
    tree = write_iemocap_tree(tmp_path / "iemocap")
    out = tmp_path / "out"
    manifest = ingest_corpus(RELEASES["iemocap"].scan(tree.root), out, workers=1).manifest
    assert manifest["speakers"]["Ses02M"] == {"language": "en", "gender": "M", "session": "Ses02"}
    overlapping = manifest["source"]["overlapping_turns"]
    assert overlapping["Ses01F_impro01_" + OVERLAPPING[0]] == "Ses01F_impro01_" + OVERLAPPING[1]
    plans = load_plans(out)
    assert [p.name for p in plans["sessions"]] == ["session-Ses01", "session-Ses02", "session-Ses03"]
    assert find_plan(plans, "session-Ses02").eval_sets == {"test_en": ("Ses02F", "Ses02M")}
    # Skipping overlapping turns names them; keeping 'exc' makes it a class of its own.
    scan = RELEASES["iemocap"].scan(tree.root, classes="all", merge_excited=False, skip_overlapping=True)
    assert "exc" in scan.labels and "fru" in scan.labels
    reasons = {x["path"]: x["reason"] for x in scan.skipped}
    overlap = "IEMOCAP_full_release/Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F004.wav"
    assert "overlaps Ses01F_impro01_M004" in reasons[overlap]
    assert {e.label for e in scan.entries if e.utterance_id.endswith("impro01_F001")} == {"exc"}
    assert not any(e.utterance_id.endswith(NO_AUDIO) for e in scan.entries)


def test_msp_podcast_official_splits_are_a_plan(tmp_path):
    tree = write_msp_podcast_tree(tmp_path / "msp")
    out = tmp_path / "out"
    ingest_corpus(RELEASES["msp_podcast"].scan(tree.root), out, workers=1)
    official = find_plan(load_plans(out), "official")
    assert official.train_speakers == ("127", "128", "129", "unknown-train")
    assert official.eval_sets == {"development": ("310",), "test1": ("455", "unknown-test1"), "test2": ("456",)}


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_table_ingest_names_every_bad_row_by_line(tmp_path, fmt):
    tree, table = write_table_tree(tmp_path, fmt=fmt)
    out = tmp_path / "out"
    code = ingest_main(
        ["table", str(table), "--audio-root", str(tree.root), "--out", str(out), "--labels", LABEL_MAP]
        + ["--drop-unmapped", "--verify", "--workers", "1", "--json"]
    )
    assert code == 0
    manifest = assert_ingested_as_expected(out, tree, ("neu", "ang", "sad", "hap"))
    assert manifest["source"]["dropped_unmapped"] == {"bored": 1}
    assert {s: m["language"] for s, m in manifest["speakers"].items()} == {
        "anna": "de",
        "ben": "de",
        "chloe": "fr",
        "dai": "fr",
    }
    plans = load_plans(out)
    assert find_plan(plans, "loso-chloe").eval_sets == {"test_fr": ("chloe",)}
    assert find_plan(plans, "loso-chloe").train_speakers == ("dai",)


def test_table_refuses_unmapped_labels_unless_told(tmp_path):
    tree, table = write_table_tree(tmp_path)
    with pytest.raises(UnmappedLabelsError, match="'bored' \\(1 rows\\).*--drop-unmapped"):
        scan_table(table, tree.root, parse_label_map(LABEL_MAP))
    with pytest.raises(SystemExit, match="bored"):
        ingest_main(
            ["table", str(table), "--audio-root", str(tree.root), "--out", str(tmp_path / "o")]
            + ["--labels", LABEL_MAP]
        )
    assert not (tmp_path / "o" / "manifest.json").exists()
    # Without a map, every label of the table is a class, sorted.
    assert scan_table(table, tree.root).labels == ("ang", "bored", "exc", "hap", "neu", "sad")


def test_table_rerun_reprocesses_only_the_changed_speaker(tmp_path):
    tree, table = write_table_tree(tmp_path)
    out = tmp_path / "out"
    label_map = parse_label_map(LABEL_MAP)
    first = ingest_corpus(scan_table(table, tree.root, label_map, drop_unmapped=True), out, workers=1)
    text = table.read_text().replace("chloe/take_000.wav,neu", "chloe/take_000.wav,sad")
    table.write_text(text)
    second = ingest_corpus(scan_table(table, tree.root, label_map, drop_unmapped=True), out, workers=1)
    assert second.processed == ["chloe"] and sorted(second.reused) == ["anna", "ben", "dai"]
    assert second.manifest["utterances"]["chloe/take_000"]["emotion"] == "sad"
    assert verify_corpus(out) == []
    shard_files = {p.name for p in (out / "shards").iterdir()}
    assert shard_files == {e["path"].split("/")[1] for e in second.manifest["shards"]}
    assert first.manifest["content_hash"] != second.manifest["content_hash"]


def test_label_maps():
    assert parse_label_map("neu, ang,exc=hap,hap") == {"neu": "neu", "ang": "ang", "exc": "hap", "hap": "hap"}
    with pytest.raises(ValueError, match="mapped twice"):
        parse_label_map("exc=hap,exc=neu")


def test_a_hand_edited_plan_that_leaks_is_refused(tmp_path):
    tree = write_emodb_tree(tmp_path / "emodb")
    out = tmp_path / "out"
    ingest_corpus(RELEASES["emodb"].scan(tree.root), out, workers=1)
    document = json.loads((out / "splits.json").read_text())
    fold = document["plans"]["loso"][0]
    fold["train_speakers"].append(next(iter(fold["eval_sets"].values()))[0])
    (out / "splits.json").write_text(json.dumps(document))
    with pytest.raises(SpeakerLeakError):
        load_plans(out)
    assert any("splits.json" in p for p in verify_corpus(out))


def test_ingest_list_names_every_release(capsys):
    assert ingest_main(["list"]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in [*RELEASES, "table"])


def test_another_corpus_in_the_same_folder_is_refused(tmp_path):
    emodb = write_emodb_tree(tmp_path / "emodb")
    ingest_corpus(RELEASES["emodb"].scan(emodb.root), tmp_path / "out", workers=1)
    cremad = write_cremad_tree(tmp_path / "cremad")
    with pytest.raises(FileExistsError, match="emodb"):
        ingest_corpus(RELEASES["cremad"].scan(cremad.root), tmp_path / "out", workers=1)
    assert os.path.exists(tmp_path / "out" / "manifest.json")


def test_speaker_folds_are_disjoint_and_stratified_by_language_and_gender():
    speakers = {f"s{i:02d}": {"language": ("de", "fr")[i % 2], "gender": "FM"[(i // 2) % 2]} for i in range(20)}
    folds = speaker_folds(speakers, k=5)
    held = [sorted(s for group in f.eval_sets.values() for s in group) for f in folds]
    assert sorted(s for h in held for s in h) == sorted(speakers)  # every speaker tested exactly once
    for fold, tested in zip(folds, held):
        assert not set(tested) & set(fold.train_speakers)
        cells = {(speakers[s]["language"], speakers[s]["gender"]) for s in tested}
        assert len(cells) == 4  # one of each language x gender in each fold
    assert set(corpus_plans(speakers)) == {"loso", "folds"}


def test_named_release_from_the_command_line(tmp_path, capsys):
    tree = write_iemocap_tree(tmp_path / "iemocap", sessions=(1, 2))
    out = tmp_path / "out"
    code = ingest_main(["iemocap", str(tree.root), "--out", str(out), "--workers", "1", "--verify"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "verify: every shard" in printed and "Ses02M" in printed
    assert "no majority label ('xxx')" in printed  # bad files summarised by reason
    header = next(line for line in printed.splitlines() if line.startswith("speaker"))
    assert header.split()[3:7] == ["neu", "hap", "ang", "sad"]  # the corpus's own labels, in order
    assert ingest_main(["iemocap", str(tree.root), "--out", str(out), "--workers", "1", "--keep-excited"]) == 0
    assert ShardReader(out).labels == ("neu", "hap", "ang", "sad")  # 'exc' is outside the 4-class set now
    assert any("'exc' outside the 4-class" in x["reason"] for x in ShardReader(out).manifest["skipped"])


def test_a_split_column_is_a_plan_only_when_speaker_independent(tmp_path):
    tree, table = write_table_tree(tmp_path)
    rows = table.read_text().splitlines()
    split_of = {"anna": "train", "ben": "train", "chloe": "test", "dai": "dev"}
    with_splits = [rows[0]]
    for line in rows[1:]:
        fields = line.split(",")
        fields[4] = split_of.get(fields[2], "")
        with_splits.append(",".join(fields))
    table.write_text("\n".join(with_splits) + "\n")
    scan = scan_table(table, tree.root, parse_label_map(LABEL_MAP), drop_unmapped=True)
    ingest_corpus(scan, tmp_path / "a", workers=1)
    official = find_plan(load_plans(tmp_path / "a"), "official")
    assert official.train_speakers == ("anna", "ben") and official.eval_sets == {"dev": ("dai",), "test": ("chloe",)}
    # One of chloe's clips in train: the split is per utterance, so there is no official plan.
    table.write_text(
        "\n".join(with_splits).replace("chloe/take_001.wav,ang,chloe,fr,test", "chloe/take_001.wav,ang,chloe,fr,train")
    )
    scan = scan_table(table, tree.root, parse_label_map(LABEL_MAP), drop_unmapped=True)
    manifest = ingest_corpus(scan, tmp_path / "b", workers=1).manifest
    assert "official" not in load_plans(tmp_path / "b")
    assert "chloe" in manifest["source"]["official_split_plan"]


any_speakers = st.dictionaries(
    keys=st.text("abcxyz0123-", min_size=1, max_size=6),
    values=st.fixed_dictionaries(
        {"language": st.sampled_from(["en", "de", "yue"]), "gender": st.sampled_from(["F", "M", "unknown"])},
        optional={
            "session": st.sampled_from(["Ses01", "Ses02", "Ses03"]),
            "official_split": st.sampled_from(["train", "development", "test1"]),
        },
    ),
    max_size=14,
)


@settings(max_examples=150, deadline=None)
@given(any_speakers)
def test_no_corpus_plan_ever_puts_a_test_speaker_in_training(speakers):
    for family, plans in corpus_plans(speakers).items():
        for plan in plans:
            held_out = {s for group in plan.eval_sets.values() for s in group}
            assert held_out and plan.train_speakers, (family, plan)
            assert not held_out & set(plan.train_speakers)
            assert set(plan.train_speakers) | held_out <= set(speakers)
