"""Prediction on users' audio files with a finished trial's model: formats, rates, channels,
abstention below the threshold, and a clear answer for every file that cannot be analysed."""

import json

import numpy as np
import pytest
import soundfile as sf
from mlflow.tracking import MlflowClient
from sweep_stores import finished_smoke_sweep

from orchestrator import predict
from shards.reader import ShardReader
from shards.schema import EMOTIONS
from shards.source_decode import mono_at
from shards.user_audio import AudioFileError, read_audio

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_sweep(demo_dir, local_ray, tmp_path_factory):
    return finished_smoke_sweep(demo_dir, tmp_path_factory.mktemp("smoke_sweep"))


@pytest.fixture(scope="module")
def trial_run(smoke_sweep):
    uri, parent_id, _ = smoke_sweep
    client = MlflowClient(uri)
    children = client.search_runs(
        [client.get_run(parent_id).info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'"
    )
    return children[0].info.run_id


@pytest.fixture(scope="module")
def audio_files(demo_dir, tmp_path_factory):
    """One demo clip written as WAV and FLAC, 16 and 44.1 kHz, mono and stereo; plus bad inputs."""
    out = tmp_path_factory.mktemp("audio")
    reader = ShardReader(demo_dir)
    clip = reader.audio(0).astype(np.float32) / 32768
    at_44k = mono_at(clip[:, None], 16_000, 44_100).astype(np.float32)
    stereo = lambda x: np.stack([x, 0.6 * x], axis=1)  # noqa: E731 - louder left, as a real recording might be
    files = {
        "wav16_mono": (out / "clip16_mono.wav", clip, 16_000),
        "wav44_stereo": (out / "clip44_stereo.wav", stereo(at_44k), 44_100),
        "flac16_stereo": (out / "clip16_stereo.flac", stereo(clip), 16_000),
        "flac44_mono": (out / "clip44_mono.flac", at_44k, 44_100),
    }
    for path, samples, rate in files.values():
        sf.write(path, samples, rate)
    paths = {name: path for name, (path, _, _) in files.items()}
    paths["silence"] = out / "silence.wav"
    sf.write(paths["silence"], np.zeros(32_000, dtype=np.float32), 16_000)
    paths["ten_minutes"] = out / "ten_minutes.flac"  # a quiet tone, so only its length is wrong
    seconds = np.arange(600 * 8_000) / 8_000
    sf.write(paths["ten_minutes"], 0.1 * np.sin(2 * np.pi * 220 * seconds), 8_000)
    paths["not_audio"] = out / "notes.wav"
    paths["not_audio"].write_text("these are my notes, not a recording\n")
    paths["missing"] = out / "missing.wav"
    return paths, reader.index.emotion[0]


def run_json(capsys, *argv) -> tuple[int, dict]:
    code = predict.main([*map(str, argv), "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_answers_wav_and_flac_at_16_and_44k_mono_and_stereo(smoke_sweep, trial_run, audio_files, capsys):
    uri, _, _ = smoke_sweep
    paths, _ = audio_files
    names = ["wav16_mono", "wav44_stereo", "flac16_stereo", "flac44_mono"]
    code, result = run_json(
        capsys, "--run", trial_run, "--tracking-uri", uri, "--threshold", "0.2", *[paths[n] for n in names]
    )
    assert code == 0 and result["answered"] == 4 and result["model"]["run_id"] == trial_run
    files = result["files"]
    assert [(f["audio"]["sample_rate"], f["audio"]["channels"]) for f in files] == [
        (16_000, 1),
        (44_100, 2),
        (16_000, 2),
        (44_100, 1),
    ]
    for answer in files:
        assert set(answer["probabilities"]) == set(EMOTIONS)
        assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
        # With five emotions the top probability is at least 0.2: nothing abstains at threshold 0.2.
        assert answer["decision"] == answer["emotion"] == max(answer["probabilities"], key=answer["probabilities"].get)


def test_every_format_rate_and_layout_reaches_the_model_as_the_same_16k_mono_clip(audio_files, demo_dir):
    paths, _ = audio_files
    original = ShardReader(demo_dir).audio(0).astype(np.float32) / 32768
    for name in ["wav16_mono", "wav44_stereo", "flac16_stereo", "flac44_mono"]:
        heard = read_audio(paths[name]).audio
        assert abs(len(heard) - len(original)) <= 1, name
        n = min(len(heard), len(original))
        # Stereo mixes down to 0.8x (channels 1 and 0.6); the model normalises loudness away.
        assert np.corrcoef(heard[:n], original[:n])[0, 1] > 0.999, name


def test_probabilities_are_the_models_on_the_clip(smoke_sweep, trial_run, audio_files, demo_dir, capsys, tmp_path):
    from workers.finetune.checkpoint import load_model
    from workers.finetune.serving import clip_probabilities

    uri, _, _ = smoke_sweep
    paths, _ = audio_files
    code, result = run_json(capsys, "--run", trial_run, "--tracking-uri", uri, paths["wav16_mono"])
    MlflowClient(uri).download_artifacts(trial_run, "model", str(tmp_path))
    model = load_model(tmp_path / "model").eval()
    original = ShardReader(demo_dir).audio(0).astype(np.float32) / 32768
    expected = clip_probabilities(model, original)
    got = [result["files"][0]["probabilities"][label] for label in model.labels]
    assert np.allclose(got, expected, atol=1e-4)


def test_abstains_below_the_threshold_and_names_the_competing_emotions(smoke_sweep, trial_run, audio_files, capsys):
    uri, _, _ = smoke_sweep
    paths, _ = audio_files
    code = predict.main(["--run", trial_run, "--tracking-uri", uri, "--threshold", "0.99", str(paths["wav16_mono"])])
    out = capsys.readouterr().out
    assert code == 0  # an "uncertain" answer is an answer
    assert "uncertain:" in out and "compete" in out and "below 0.99, a person should listen" in out

    code, result = run_json(
        capsys, "--run", trial_run, "--tracking-uri", uri, "--threshold", "0.99", paths["flac44_mono"]
    )
    answer = result["files"][0]
    assert answer["decision"] == "uncertain" and answer["emotion"] is None
    probabilities = answer["probabilities"]
    assert 2 <= len(answer["competing"]) <= 3
    assert answer["competing"] == sorted(probabilities, key=probabilities.get, reverse=True)[: len(answer["competing"])]


def test_each_bad_file_gets_its_reason_and_the_good_one_is_still_answered(smoke_sweep, trial_run, audio_files, capsys):
    uri, _, _ = smoke_sweep
    paths, _ = audio_files
    bad = ["missing", "not_audio", "silence", "ten_minutes"]
    code, result = run_json(
        capsys, "--run", trial_run, "--tracking-uri", uri, *[paths[n] for n in bad], paths["wav16_mono"]
    )
    assert code == 0 and result["answered"] == 1
    errors = {name: answer.get("error", "") for name, answer in zip(bad, result["files"])}
    assert errors["missing"] == "no such file"
    assert errors["not_audio"].startswith("not a readable audio file (Format not recognised)")
    assert errors["silence"].startswith("is silent")
    assert errors["ten_minutes"].startswith("is 600.0 s long, over the 30 s limit")
    assert result["files"][-1]["answered"]


def test_no_file_answered_exits_non_zero(smoke_sweep, trial_run, audio_files, capsys):
    uri, _, _ = smoke_sweep
    paths, _ = audio_files
    code = predict.main(["--run", trial_run, "--tracking-uri", uri, str(paths["missing"]), str(paths["silence"])])
    out = capsys.readouterr().out
    assert code == 1
    assert f"{paths['missing']}: not answered: no such file" in out and "0 of 2 file(s) answered" in out


def test_parent_run_uses_its_best_trial(smoke_sweep, audio_files, capsys):
    uri, parent_id, _ = smoke_sweep
    paths, _ = audio_files
    code, result = run_json(capsys, "--run", parent_id, "--tracking-uri", uri, paths["wav16_mono"])
    assert code == 0 and result["model"]["parent_run_id"] == parent_id
    client = MlflowClient(uri)
    chosen = client.get_run(result["model"]["run_id"])
    assert chosen.data.tags["mlflow.parentRunId"] == parent_id


def test_tune_checkpoint_directory_loads_and_an_ambiguous_one_is_refused(smoke_sweep, audio_files, capsys):
    _, _, storage = smoke_sweep
    paths, _ = audio_files
    # <storage>/<sweep>/<phase>/<trial>/checkpoint_*: a trial reports a checkpoint whenever its best
    # changed, and its final (best) model last.
    trial_dir = next(p.parent for p in sorted(storage.rglob("checkpoint_000000")) if p.is_dir())
    latest = sorted(trial_dir.glob("checkpoint_*"))[-1]
    code, result = run_json(capsys, "--checkpoint", trial_dir, paths["wav16_mono"])
    assert code == 0 and result["model"]["checkpoint"] == str(latest)

    experiment_dir = trial_dir.parent
    assert predict.main(["--checkpoint", str(experiment_dir), str(paths["wav16_mono"])]) == 1
    assert "checkpoints of several trials; pass one of them" in capsys.readouterr().err


def test_unknown_run_is_one_clear_line(smoke_sweep, audio_files, capsys):
    uri, _, _ = smoke_sweep
    paths, _ = audio_files
    assert predict.main(["--run", "0" * 32, "--tracking-uri", uri, str(paths["wav16_mono"])]) == 1
    assert capsys.readouterr().err.strip() == f"predict: no run {'0' * 32} in {uri}"


def test_decide_keeps_the_fewest_emotions_that_hold_the_threshold():
    labels = ["Angry", "Happy", "Neutral", "Sad", "Surprise"]
    assert predict.decide(labels, [0.85, 0.05, 0.05, 0.03, 0.02], 0.8)["decision"] == "Angry"
    two = predict.decide(labels, [0.05, 0.5, 0.05, 0.35, 0.05], 0.8)
    assert two["decision"] == "uncertain" and two["competing"] == ["Happy", "Sad"]
    three = predict.decide(labels, [0.3, 0.3, 0.2, 0.1, 0.1], 0.8)
    assert three["competing"] == ["Angry", "Happy", "Neutral"]  # at most three, even below the threshold


def test_read_audio_mixes_down_and_resamples_to_16k(tmp_path):
    rate = 44_100
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate).astype(np.float32)
    sf.write(tmp_path / "stereo.flac", np.stack([tone, 0.5 * tone], axis=1), rate)
    clip = read_audio(tmp_path / "stereo.flac")
    assert (clip.source_rate, clip.source_channels) == (rate, 2)
    assert len(clip.audio) == 16_000 and clip.audio.dtype == np.float32
    assert np.abs(clip.audio).max() == pytest.approx(0.375, abs=0.01)  # mean of 0.5 and 0.25 amplitude
    with pytest.raises(AudioFileError, match="is empty"):
        (tmp_path / "empty.wav").write_bytes(b"")
        read_audio(tmp_path / "empty.wav")


@pytest.mark.parametrize("start", ["tiny_whisper", "tiny"])
def test_every_family_answers_with_the_model_on_the_int16_clip(audio_files, capsys, tmp_path, start):
    """predict feeds int16 samples and lengths to classify, as training does: Whisper works too."""
    import torch

    from workers.finetune.checkpoint import save_model
    from workers.finetune.model import EmotionClassifier, build_encoder

    torch.manual_seed(0)
    model = EmotionClassifier(build_encoder(start), head_dropout=0.0).eval()
    model_dir = save_model(model, tmp_path / "model")
    paths, _ = audio_files
    code, result = run_json(capsys, "--checkpoint", model_dir, paths["wav16_mono"])
    assert code == 0 and result["files"][0]["answered"]
    clip = np.round(read_audio(paths["wav16_mono"]).audio * 32768).clip(-32768, 32767).astype(np.int16)
    with torch.no_grad():
        logits = model.classify(torch.from_numpy(clip)[None, :], torch.tensor([len(clip)]))
    expected = torch.softmax(logits, dim=-1)[0].numpy()
    got = [result["files"][0]["probabilities"][label] for label in model.labels]
    assert np.allclose(got, expected, atol=1e-4)
