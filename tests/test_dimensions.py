"""Dimensional emotion (arousal, valence, dominance): ingest keeps the labels, CCC is Lin's, the features
baseline fits regressors, a fine-tuning trial learns them, and predict and the served model answer values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from fixtures.corpus_tree import write_wav
from fixtures.iemocap_tree import write_iemocap_tree
from fixtures.msp_dimensions_tree import has_espeak, plan_utterances, write_msp_dimensions_tree
from fixtures.msp_podcast_tree import write_msp_podcast_tree
from fixtures.ravdess_tree import write_ravdess_tree
from shards.corpora import RELEASES
from shards.corpus import ingest_corpus
from shards.reader import ShardReader
from shards.schema import CLIP_SCHEMA, DIMENSIONS
from shards.table import scan_table
from shards.verify import verify_corpus
from workers.core.dimensions import ccc, ccc_loss, dimension_scores, mae, pcc
from workers.core.reporting import ListReporter
from workers.vocabulary import Key

# Hand-computed: means 2.5 and 3; variances 1.25 and 1.5; covariance 1.25; (mean difference)^2 0.25.
TRUE, PREDICTED = [1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 3.0, 5.0]
CCC_BY_HAND = 2 * 1.25 / (1.25 + 1.5 + 0.25)  # 0.8333
PCC_BY_HAND = 1.25 / math.sqrt(1.25 * 1.5)  # 0.9129


def test_ccc_pcc_mae_and_the_ccc_loss_match_the_hand_computed_values():
    assert ccc(TRUE, PREDICTED) == pytest.approx(CCC_BY_HAND)
    assert pcc(TRUE, PREDICTED) == pytest.approx(PCC_BY_HAND)
    assert mae(TRUE, PREDICTED) == pytest.approx(0.5)
    # A shifted copy correlates perfectly yet is not concordant: CCC punishes the bias, PCC does not.
    assert pcc(TRUE, np.add(TRUE, 2.0)) == pytest.approx(1.0) and ccc(TRUE, np.add(TRUE, 2.0)) < 0.5
    # A clip without a value (NaN) is left out, not counted as a miss.
    assert ccc([*TRUE, math.nan], [*PREDICTED, 7.0]) == pytest.approx(CCC_BY_HAND)
    loss = ccc_loss(torch.tensor([PREDICTED, PREDICTED]).T, torch.tensor([TRUE, TRUE]).T)
    assert float(loss) == pytest.approx(1 - CCC_BY_HAND, abs=1e-6)
    scores = dimension_scores("test", np.array([TRUE, TRUE]).T, np.array([PREDICTED, TRUE]).T, ("arousal", "valence"))
    assert scores["test/arousal/ccc"] == pytest.approx(CCC_BY_HAND) and scores["test/valence/ccc"] == 1.0
    assert scores["test/ccc"] == pytest.approx((CCC_BY_HAND + 1.0) / 2)
    assert set(scores) == {f"test/{d}/{s}" for d in ("arousal", "valence") for s in ("ccc", "pcc", "mae")} | {
        "test/ccc"
    }


@pytest.mark.parametrize(
    ("name", "write", "scale"),
    [("msp_podcast", write_msp_podcast_tree, [1.0, 7.0]), ("iemocap", write_iemocap_tree, [1.0, 5.0])],
)
def test_each_release_with_dimensions_keeps_every_clips_values_and_names_them_in_the_manifest(
    tmp_path, name, write, scale
):
    tree = write(tmp_path / name)
    out = tmp_path / "out"
    ingest_corpus(RELEASES[name].scan(tree.root), out, workers=1)
    reader = ShardReader(out)
    assert reader.manifest["dimensions"] == {d: scale for d in DIMENSIONS}
    assert reader.dimensions == DIMENSIONS and reader.manifest["schema"][-3:] == list(DIMENSIONS)
    kept = {u: dict(zip(DIMENSIONS, map(float, v))) for u, v in zip(reader.index.utterance_id, reader.index.dimensions)}
    assert set(kept) == set(tree.good)
    for utterance, values in kept.items():
        assert values == pytest.approx(tree.dimensions[utterance]), utterance
    assert len({v["arousal"] for v in kept.values()}) > 2  # the values differ from clip to clip
    assert verify_corpus(out) == []


def test_a_corpus_without_dimensions_is_written_as_before(tmp_path):
    tree = write_ravdess_tree(tmp_path / "ravdess")
    ingest_corpus(RELEASES["ravdess"].scan(tree.root), tmp_path / "out", workers=1)
    reader = ShardReader(tmp_path / "out")
    assert "dimensions" not in reader.manifest and reader.manifest["schema"] == CLIP_SCHEMA.names
    assert reader.dimensions == () and reader.index.dimensions.shape == (len(reader), 0)
    import pyarrow as pa

    shard = reader.manifest["shards"][0]["path"]
    assert pa.ipc.open_file(pa.memory_map(str(tmp_path / "out" / shard))).schema.equals(CLIP_SCHEMA)


def test_a_tables_dimension_columns_are_kept_with_their_range_and_a_bad_number_is_named(tmp_path):
    audio = tmp_path / "audio"
    for k in range(4):
        write_wav(audio / f"clip{k}.wav", seed=k)
    rows = [
        "path,label,speaker,arousal,valence",
        "clip0.wav,neu,s1,0.2,-0.5",
        "clip1.wav,ang,s1,0.9,",  # no valence for this clip: NaN, still ingested
        "clip2.wav,neu,s2,0.4,0.5",
        "clip3.wav,ang,s2,high,0.1",
    ]
    (tmp_path / "table.csv").write_text("\n".join(rows) + "\n")
    scan = scan_table(tmp_path / "table.csv", audio)
    assert scan.dimensions == {"arousal": [0.2, 0.9], "valence": [-0.5, 0.5]}
    assert [s["reason"] for s in scan.skipped] == ["arousal 'high' is not a number"]
    ingest_corpus(scan, tmp_path / "out", workers=1)
    reader = ShardReader(tmp_path / "out")
    assert reader.dimensions == ("arousal", "valence")
    values = dict(zip(reader.index.utterance_id, reader.index.dimensions.tolist()))
    assert values["clip0"] == pytest.approx([0.2, -0.5]) and values["clip1"][0] == pytest.approx(0.9)
    assert math.isnan(values["clip1"][1])


def test_the_generated_corpus_puts_every_speaker_in_one_split_and_its_labels_drive_the_audio(tmp_path):
    utterances = write_msp_dimensions_tree(tmp_path, num_speakers=6, per_speaker=6, engine="synthetic")
    splits = {}
    for u in utterances:
        splits.setdefault(u.speaker, set()).add(u.split)
    assert all(len(s) == 1 for s in splits.values()) and {"Train", "Development", "Test1"} == set().union(
        *splits.values()
    )
    assert utterances == plan_utterances(6, 6, seed=0)  # labels are seeded
    import soundfile

    # Dominance drives the loudness: the most dominant third of the clips is louder than the least (synthetic engine).
    rms = {u.name: float(np.sqrt(np.mean(soundfile.read(tmp_path / "Audios" / u.name)[0] ** 2))) for u in utterances}
    by_dominance = sorted(utterances, key=lambda u: u.dominance)
    quiet, loud = by_dominance[: len(utterances) // 3], by_dominance[-len(utterances) // 3 :]
    assert np.mean([rms[u.name] for u in loud]) > 1.3 * np.mean([rms[u.name] for u in quiet])


@pytest.mark.skipif(not has_espeak(), reason="espeak-ng is not installed (Debian: apt-get install espeak-ng)")
def test_espeak_speech_gets_faster_with_arousal_and_is_written_at_16k(tmp_path):
    import soundfile

    utterances = write_msp_dimensions_tree(tmp_path, num_speakers=3, per_speaker=8, engine="espeak", words=(6, 6))
    seconds = {}
    for u in utterances:
        info = soundfile.info(tmp_path / "Audios" / u.name)
        assert (info.samplerate, info.channels, info.subtype) == (16_000, 1, "PCM_16")
        seconds[u.name] = info.duration
    by_arousal = sorted(utterances, key=lambda u: u.arousal)
    calm, excited = by_arousal[:8], by_arousal[-8:]
    assert np.mean([seconds[u.name] for u in calm]) > 1.2 * np.mean([seconds[u.name] for u in excited])


@pytest.fixture(scope="module")
def dims_corpus(tmp_path_factory):
    """A tiny MSP-Podcast-shaped corpus (synthetic voices): 6 speakers of 8 clips, 4 Train, 1 Development, 1 Test1."""
    root = tmp_path_factory.mktemp("msp_dims")
    write_msp_dimensions_tree(root / "release", num_speakers=6, per_speaker=8, engine="synthetic", words=(2, 3))
    ingest_corpus(RELEASES["msp_podcast"].scan(root / "release"), root / "shards", workers=1)
    return root / "shards"


def split_of(data_dir) -> dict:
    speakers = json.loads((data_dir / "manifest.json").read_text())["speakers"]
    by_split = {}
    for speaker, meta in sorted(speakers.items()):
        by_split.setdefault(meta["official_split"], []).append(speaker)
    return {
        "train_speakers": tuple(by_split["train"]),
        "eval_sets": {"development": tuple(by_split["development"]), "test1": tuple(by_split["test1"])},
    }


def logged_run(tracking_uri: str, name: str):
    from mlflow.tracking import MlflowClient

    from workers.core.tracking import MlflowRunLogger

    client = MlflowClient(tracking_uri)
    run_id = client.create_run(client.create_experiment(name)).info.run_id
    return client, run_id, MlflowRunLogger(tracking_uri, run_id)


def dimension_keys(sets) -> set[str]:
    keys = {Key.set_metric(s, Key.CCC) for s in sets}
    return keys | {Key.dimension_metric(s, d, stat) for s in sets for d in DIMENSIONS for stat in Key.DIMENSION_STATS}


def test_the_features_baseline_fits_regressors_and_its_saved_model_predicts_values(dims_corpus, tmp_path, tracking_uri):
    from workers.acoustic.trial import FeaturesConfig, load_saved_model, run_features_trial

    client, run_id, logger = logged_run(tracking_uri, "features-dims")
    reporter = ListReporter(checkpoint_root=tmp_path / "tune")
    cfg = FeaturesConfig(
        data_dir=str(dims_corpus), task="dimensions", num_workers=1, classifier="logreg", C=0.1, **split_of(dims_corpus)
    )
    final = run_features_trial(cfg, logger, reporter)
    client.update_run(run_id, "FINISHED")
    logged = client.get_run(run_id).data.metrics
    sets = ("val", "development", "test1")
    assert dimension_keys(sets) <= set(logged) and not any(k.endswith("/accuracy") for k in logged)
    assert logged["test1/ccc"] == pytest.approx(final["test1/ccc"])
    assert logged["val/arousal/ccc"] > 0.3  # ridge on eGeMAPS hears the speaking rate even on 30 clips
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {Key.dimension_predictions(s) for s in sets} <= artifacts
    model = load_saved_model(reporter.checkpoints[-1])
    assert model.labels == [] and model.dimensions == DIMENSIONS
    reader = ShardReader(dims_corpus)
    values = model.values(reader.audio(0))
    assert values.shape == (3,) and np.all(np.isfinite(values))
    with pytest.raises(ValueError, match="fine-tuning only"):
        FeaturesConfig(data_dir=str(dims_corpus), task="both")


def test_a_dimensional_fine_tuning_trial_logs_ccc_per_set_and_predict_answers_values(
    dims_corpus, tmp_path, tracking_uri, capsys
):
    from orchestrator import predict
    from workers.finetune.config import TrialConfig
    from workers.finetune.recipe import run_trial
    from workers.finetune.serving import EmotionPredictor, load_saved_model

    client, run_id, logger = logged_run(tracking_uri, "finetune-dims")
    stage = {"trainable": "all", "epochs": 1, "learning_rate": 3e-3, "batch_size": 4}
    cfg = TrialConfig(
        data_dir=str(dims_corpus),
        **split_of(dims_corpus),
        task="dimensions",
        stages=(stage,),
        eval_every_steps=4,
        val_fraction=0.2,
        prefetch_batches=0,
        feature_cache_dir=str(tmp_path / "features"),
    )
    reporter = ListReporter(checkpoint_root=tmp_path / "tune")
    final = run_trial(cfg, logger, reporter, device=torch.device("cpu"))
    client.update_run(run_id, "FINISHED")
    logged = client.get_run(run_id).data.metrics
    sets = ("val", "development", "test1")
    assert dimension_keys(sets) <= set(logged)
    assert not any(k.endswith("/accuracy") for k in final)  # the class head is not trained, nor scored
    assert Key.VAL_CCC in reporter.reports[0]  # every report carries what a dimensional sweep ranks by
    assert final["val/loss"] == pytest.approx(1 - final["val/ccc"], abs=1e-6)  # the CCC loss on the set
    assert {Key.dimension_predictions(s) for s in sets} <= {a.path for a in client.list_artifacts(run_id)}

    saved = reporter.checkpoints[-1]
    model = load_saved_model(saved)
    assert model.labels == [] and model.dimensions == DIMENSIONS
    clip = ShardReader(dims_corpus).audio(0).astype(np.float64) / 32768
    served = EmotionPredictor(model.model).predict({"audio": [clip]})
    assert list(served.columns) == list(DIMENSIONS)
    wav = tmp_path / "clip.wav"
    import soundfile

    soundfile.write(wav, clip, 16_000, subtype="PCM_16")
    assert predict.main(["--model", str(saved), str(wav), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)["files"][0]
    assert set(answer["values"]) == set(DIMENSIONS) and "decision" not in answer
    assert answer["values"]["arousal"] == pytest.approx(float(served["arousal"][0]), abs=1e-3)


def test_a_dimensional_sweep_ranks_by_val_ccc_unless_it_says_otherwise():
    import search_spaces

    spec = search_spaces.load("features")
    assert spec.override({"task": "dimensions"}).metric == Key.VAL_CCC
    assert spec.override({"task": "categorical"}).metric == Key.VAL_ACCURACY
    own = spec.replace(dimension_metric="val/arousal/ccc")
    assert own.override({"task": "dimensions"}).metric == "val/arousal/ccc"


@pytest.mark.slow
def test_a_dimensional_features_sweep_ranks_by_val_ccc_and_reports_its_ccc_table_and_scatter(
    dims_corpus, local_ray, tmp_path
):
    from mlflow.tracking import MlflowClient

    from orchestrator import report, results, sweep
    from workers.vocabulary import SweepTag, Tag

    split = split_of(dims_corpus)
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    flags = ["--tracking-uri", uri, "--storage", str(tmp_path / "ray"), "--cpus-per-trial", "1", "--preset", "tiny"]
    flags += ["--set", "task=dimensions", "--set", f"train_speakers={json.dumps(split['train_speakers'])}"]
    flags += ["--set", f"eval_sets={json.dumps(split['eval_sets'])}", "--set", "num_workers=1"]
    assert sweep.main(["features", "--data", str(dims_corpus), *flags]) == 0
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("features")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if Tag.PARENT_RUN not in r.data.tags]
    assert parent.data.tags[SweepTag.METRIC] == Key.VAL_CCC
    trials = [r for r in runs if Tag.PARENT_RUN in r.data.tags]
    assert len(trials) == 3 and all(r.data.tags[Tag.TRIAL_STATE] == "completed" for r in trials)
    best = results.load_sweep(client, parent).best()
    assert best is not None and best.metric(Key.VAL_CCC) == max(r.data.metrics[Key.VAL_CCC] for r in trials)
    assert parent.data.metrics[f"{Key.BEST_PREFIX}test1/arousal/ccc"] == best.metric("test1/arousal/ccc")
    out = tmp_path / "report"
    assert report.main([parent.info.run_id, "--tracking-uri", uri, "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "Dimensional emotion" in text and "arousal CCC" in text
    assert any(p.name.endswith("_dimensions.png") for p in (out / "images").iterdir())


def test_a_step_loss_is_the_tasks_cross_entropy_dimension_loss_or_their_weighted_sum():
    from workers.finetune.config import TrialConfig
    from workers.finetune.tasks import step_loss

    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.0]])
    labels = torch.tensor([0, 1, 0, 1])
    values = torch.tensor([PREDICTED]).T  # one dimension
    outputs, target = torch.cat([logits, values], dim=1), torch.tensor([TRUE]).T
    cross_entropy = float(torch.nn.functional.cross_entropy(logits, labels))

    def loss(**knobs) -> float:
        return float(step_loss(TrialConfig(**knobs), 2, outputs, labels, target, num_clips=4))

    assert loss() == pytest.approx(cross_entropy)
    assert loss(task="dimensions") == pytest.approx(1 - CCC_BY_HAND)
    assert loss(task="dimensions", dimension_loss="mse") == pytest.approx(0.5)  # (1 + 0 + 0 + 1) / 4
    assert loss(task="both", dimension_weight=0.5) == pytest.approx(cross_entropy + 0.5 * (1 - CCC_BY_HAND))
    with pytest.raises(ValueError, match="task"):
        TrialConfig(task="regression")
