"""Training and testing on any corpus: a table-ingested corpus with its own 4 labels, tested on a RAVDESS
tree (8 labels) through a label map; mixing any two languages; a corpus without the sweep's speakers.

The fixture audio carries no emotion, so these tests assert the plumbing (which labels, which sets,
which clips, which counts), never accuracy.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from fixtures.ravdess_tree import write_ravdess_tree
from fixtures.table_tree import LABEL_MAP, write_table_tree
from orchestrator import predict, report, sweep
from orchestrator.grid import GridError, build_grid
from orchestrator.ingest import main as ingest_main
from search_spaces import load
from shards.label_map import LabelMapError, RelabelledReader, map_labels
from shards.reader import ShardReader
from shards.splits import load_plans
from workers.finetune.config import TrialConfig
from workers.vocabulary import Tag

TABLE_LABELS = ("neu", "ang", "sad", "hap")  # the table fixture under LABEL_MAP (exc merged into hap)
# RAVDESS's names for the table corpus's labels; 'sad' maps by its own name.
RAVDESS_TO_TABLE = "neutral=neu,happy=hap,angry=ang"
RAVDESS_ACTORS = (1, 2, 18)
TINY = ["--set", "learning_rate=1e-3", "--set", "schedule=full", "--set", "epoch_scale=0.5"]
TINY += ["--set", "eval_every_steps=1", "--set", "batch_size=4"]


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """(table corpus: 4 labels, 4 speakers in de and fr; RAVDESS corpus: 8 labels, 3 actors, every emotion once)."""
    root = tmp_path_factory.mktemp("corpora")
    tree, table = write_table_tree(root / "table_src", per_speaker=10)
    table_dir = root / "table"
    argv = ["table", str(table), "--audio-root", str(tree.root), "--out", str(table_dir), "--labels", LABEL_MAP]
    assert ingest_main([*argv, "--drop-unmapped", "--workers", "1"]) == 0
    ravdess_tree = write_ravdess_tree(root / "ravdess_src", actors=RAVDESS_ACTORS, per_actor=8)
    ravdess_dir = root / "ravdess"
    assert ingest_main(["ravdess", str(ravdess_tree.root), "--out", str(ravdess_dir), "--workers", "1"]) == 0
    return table_dir, ravdess_dir, tree.root / "anna" / "take_000.wav"


def test_labels_map_by_name_case_insensitively_and_through_an_explicit_map():
    target = ("Angry", "hap", "neu")
    mapping = map_labels(("angry", "happy", "neutral", "calm"), target, {"HAPPY": "HAP"})
    assert mapping == {"angry": "Angry", "happy": "hap", "neutral": None, "calm": None}
    with pytest.raises(LabelMapError, match="not labels of the training corpus"):
        map_labels(("angry",), target, {"angry": "furious"})


def test_another_corpus_is_relabelled_into_the_training_labels_and_its_unmappable_clips_counted(corpora):
    table_dir, ravdess_dir, _ = corpora
    ravdess = ShardReader(ravdess_dir)
    assert len(ravdess.labels) == 8
    other = RelabelledReader(ravdess, TABLE_LABELS, {"neutral": "neu", "happy": "hap", "angry": "ang"})
    kept = other.index.label[other.rows]
    assert sorted(TABLE_LABELS[i] for i in kept) == sorted(["neu", "hap", "ang", "sad"] * len(RAVDESS_ACTORS))
    # Each kept clip's new label is its RAVDESS label under the map.
    names = {"neutral": "neu", "happy": "hap", "angry": "ang", "sad": "sad"}
    assert all(TABLE_LABELS[other.index.label[r]] == names[ravdess.index.emotion[r]] for r in other.rows)
    assert other.mapped.unmapped_clips == {
        label: len(RAVDESS_ACTORS) for label in ("calm", "fearful", "disgust", "surprised")
    }
    assert other.mapped.num_unmapped + len(other.rows) == len(ravdess)
    assert np.array_equal(other.audio(int(other.rows[0])), ravdess.audio(int(other.rows[0])))


def test_sweep_refuses_a_held_out_corpus_with_no_label_in_common_before_anything_runs(corpora, tmp_path, capsys):
    table_dir, ravdess_dir, _ = corpora
    base = ["smoke", "--data", str(table_dir), "--storage", str(tmp_path / "ray")]
    base += ["--tracking-uri", f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"]
    tree, table = write_table_tree(tmp_path / "arousal_src", per_speaker=2)
    arousal = tmp_path / "arousal"  # the same clips labelled by arousal: no label in common with the emotions
    argv = ["table", str(table), "--audio-root", str(tree.root), "--out", str(arousal), "--workers", "1"]
    assert ingest_main([*argv, "--labels", "neu=low,sad=low,ang=high,hap=high,exc=high", "--drop-unmapped"]) == 0
    with pytest.raises(SystemExit, match="none of its labels"):
        sweep.main([*base, "--eval-data", f"arousal={arousal}"])
    with pytest.raises(SystemExit, match="not labels of the training corpus"):
        sweep.main([*base, "--eval-data", f"ravdess={ravdess_dir}", "--eval-label-map", "angry=furious"])
    with pytest.raises(SystemExit, match="not an ingested corpus"):
        sweep.main([*base, "--eval-data", f"ravdess={tmp_path / 'nowhere'}"])
    with pytest.raises(SystemExit, match="NAME=DIR"):
        sweep.main([*base, "--eval-data", str(ravdess_dir)])
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "ray").exists()  # refused before any run or record


def test_a_corpus_without_the_sweeps_speakers_takes_its_own_first_stored_plan(corpora):
    table_dir, _, _ = corpora
    speakers = ShardReader(table_dir).manifest["speakers"]
    grid = build_grid(load("smoke"), speakers, stored_plans=load_plans(table_dir))
    # The table corpus has 4 speakers in 2 languages: leave-one-speaker-out is its only family.
    assert grid.plan.startswith("plan loso:loso-anna (the corpus's splits.json)")
    values = grid.phases[-1].variants[0].values
    assert values["train_speakers"] == ("ben",) and values["eval_sets"] == {"test_de": ("anna",)}
    # Speakers the user names win over any stored plan.
    explicit = load("smoke").override({"train_speakers": ("anna", "chloe"), "eval_sets": {"test_fr": ("dai",)}})
    grid = build_grid(explicit, speakers, stored_plans=load_plans(table_dir), explicit_speakers=True)
    assert grid.phases[-1].variants[0].values["train_speakers"] == ("anna", "chloe")
    with pytest.raises(GridError, match="no split plan"):
        build_grid(load("smoke"), speakers, stored_plans={})


def test_mixing_draws_the_source_language_at_its_fraction_on_any_two_languages(corpora):
    from shards.batching import mix_languages
    from workers.finetune.recipe import load_trial_data

    table_dir, _, _ = corpora
    cfg = TrialConfig(
        data_dir=str(table_dir),
        train_speakers=("anna", "chloe"),
        eval_sets={"test_fr": ("dai",)},
        mix_source="fr",
        source_fraction=0.75,
        val_fraction=0.0,
    )
    data = load_trial_data(cfg)
    index = data.reader.index
    source, fraction = cfg.mixing()
    shares = [
        np.mean(
            index.language[mix_languages(index, data.train_rows, fraction, np.random.default_rng(s), source)] == "fr"
        )
        for s in range(200)
    ]
    assert abs(np.mean(shares) - 0.75) < 0.03
    # The paper's knob is the same mix with source 'en'; both at once is refused.
    assert TrialConfig(english_fraction=0.3).mixing() == ("en", 0.3)
    with pytest.raises(ValueError, match="either english_fraction or mix_source"):
        TrialConfig(english_fraction=0.3, mix_source="fr")
    # A sweep that mixes a language none of its training speakers speaks stops before launch.
    speakers = ShardReader(table_dir).manifest["speakers"]
    spec = load("smoke").override({"train_speakers": ("anna", "ben"), "eval_sets": {"test_fr": ("dai",)}})
    with pytest.raises(GridError, match="mixing 'fr' at 0.5 needs 'fr' and another language"):
        build_grid(spec.override({"mix_source": "fr", "source_fraction": 0.5}), speakers, explicit_speakers=True)


@pytest.mark.slow
def test_smoke_on_a_table_corpus_tested_on_ravdess_logs_reports_and_predicts_with_its_labels(
    local_ray, corpora, tmp_path, capsys
):
    table_dir, ravdess_dir, clip = corpora
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    argv = ["smoke", "--data", str(table_dir), "--tracking-uri", uri, "--storage", str(tmp_path / "ray"), *TINY]
    argv += ["--eval-data", f"ravdess={ravdess_dir}", "--eval-label-map", RAVDESS_TO_TABLE]
    assert sweep.main(argv) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "plan loso:loso-anna (the corpus's splits.json)" in first and "4 labels (neu, ang, sad, hap)" in first

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    parent = next(r for r in runs if Tag.PARENT_RUN not in r.data.tags)
    (child,) = [r for r in runs if Tag.PARENT_RUN in r.data.tags]
    assert child.info.status == "FINISHED"
    assert parent.data.tags[Tag.LABELS] == child.data.tags[Tag.LABELS] == "neu,ang,sad,hap"
    assert str(ravdess_dir) in parent.data.tags[Tag.eval_data("test_ravdess")]
    assert "left out: calm 3" in child.data.tags[Tag.eval_data("test_ravdess")]
    metrics = child.data.metrics
    for set_name in ("test_de", "test_ravdess"):
        assert f"{set_name}/accuracy" in metrics
        assert {f"{set_name}/{label}/f1" for label in TABLE_LABELS} <= set(metrics)
        assert not any(key.startswith(f"{set_name}/Angry/") for key in metrics)  # no ESD labels
    assert metrics["test_ravdess/unmapped_clips"] == 4 * len(RAVDESS_ACTORS)
    assert all(metrics[f"test_ravdess/{label}/support"] == len(RAVDESS_ACTORS) for label in TABLE_LABELS)
    assert metrics["test_de/neu/support"] + metrics["test_de/hap/support"] > 0
    artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"confusion_matrix_test_ravdess.png", "classification_report_test_ravdess.txt"} <= artifacts
    text = client.download_artifacts(child.info.run_id, "classification_report_test_ravdess.txt", str(tmp_path))
    assert all(label in open(text).read() for label in TABLE_LABELS)

    out = tmp_path / "report"
    assert report.main(["smoke", "--tracking-uri", uri, "--out", str(out), "--no-log"]) == 0
    markdown = (out / "report.md").read_text()
    assert f"#### test_ravdess (another corpus: {ravdess_dir}; 12 clips left out" in markdown
    assert "#### test_de (held-out speakers anna)" in markdown
    assert "Labels: neu, ang, sad, hap." in markdown
    for label in ("Neu", "Ang", "Sad", "Hap"):
        assert f"| {label} |" in markdown
    assert "test_ravdess/accuracy" in markdown

    # The trial's model predicts with the table corpus's own label names (the top of 4 classes is >= 0.25: answered).
    capsys.readouterr()
    assert (
        predict.main(["--run", child.info.run_id, "--tracking-uri", uri, str(clip), "--threshold", "0.25", "--json"])
        == 0
    )
    answer = json.loads(capsys.readouterr().out)["files"][0]
    assert set(answer["probabilities"]) == set(TABLE_LABELS)
    assert answer["emotion"] == max(answer["probabilities"], key=answer["probabilities"].get)


def test_a_saved_model_continues_only_on_its_own_label_set(corpora, demo_dir, tmp_path):
    from workers.finetune.checkpoint import load_model, save_model
    from workers.finetune.model import EmotionClassifier, build_encoder
    from workers.finetune.recipe import build_model

    table_dir, _, _ = corpora
    saved = save_model(EmotionClassifier(build_encoder("tiny"), labels=TABLE_LABELS), tmp_path / "model")
    assert load_model(saved).labels == TABLE_LABELS
    assert build_model(TrialConfig(init_from=str(saved)), TABLE_LABELS).labels == TABLE_LABELS
    esd_labels = ShardReader(demo_dir).labels
    with pytest.raises(ValueError, match="only continues training on its own label set"):
        build_model(TrialConfig(init_from=str(saved)), esd_labels)
    # A fresh head has one output per label of the corpus.
    assert build_model(TrialConfig(), ShardReader(table_dir).labels).head.out_proj.out_features == 4


def test_holdout_keeps_one_validation_clip_when_the_hash_picks_none(corpora):
    from shards.batching import holdout

    table_dir, _, _ = corpora
    index = ShardReader(table_dir).index
    rows = index.select(["ben"])
    for seed in range(20):
        train, val = holdout(index, rows, 0.01, seed)
        assert len(val) >= 1 and len(train) + len(val) == len(rows) and not set(train) & set(val)
    # Large enough sets keep the plain hash rule: the same clip on the same side whatever else is selected.
    train, val = holdout(index, index.select(), 0.5, 0)
    sub_train, sub_val = holdout(index, rows, 0.5, 0)
    assert sub_val.size and set(sub_val) == set(val) & set(rows)
