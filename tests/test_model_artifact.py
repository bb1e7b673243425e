"""The trained model as a standard artifact: a transformers model the Auto classes load, an MLflow Model
that pyfunc loads and `mlflow models serve` answers, and a registered model predict takes as models:/NAME@alias."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from mlflow.tracking import MlflowClient

from shards.reader import ShardReader
from shards.schema import EMOTIONS
from workers.core.tracking import MlflowRunLogger
from workers.finetune.checkpoint import load_model, save_model
from workers.finetune.model import EmotionClassifier, EmotionModelConfig, build_encoder
from workers.finetune.serving import clip_probabilities


def clip_of(demo_dir, seconds: float = 1.0) -> np.ndarray:
    audio = ShardReader(demo_dir).audio(0)[: int(16_000 * seconds)]
    return audio.astype(np.float64) / 32768


def test_auto_model_loads_a_saved_model_with_its_labels_and_logits(tmp_path, demo_dir):
    from transformers import AutoConfig, AutoModelForAudioClassification

    torch.manual_seed(0)
    labels = ["calm", "tense", "other"]
    model = EmotionClassifier(build_encoder("tiny_hubert"), labels=labels, pooling="attentive", layer=1).eval()
    save_model(model, tmp_path / "m")
    config = AutoConfig.from_pretrained(tmp_path / "m")
    assert isinstance(config, EmotionModelConfig) and config.encoder["model_type"] == "hubert"
    assert config.id2label == dict(enumerate(labels)) and config.label2id == {n: i for i, n in enumerate(labels)}
    assert (config.pooling, config.layer, config.hidden_size) == ("attentive", 1, 64)
    loaded = AutoModelForAudioClassification.from_pretrained(tmp_path / "m").eval()
    assert type(loaded) is EmotionClassifier and loaded.labels == tuple(labels)
    audio = torch.from_numpy((clip_of(demo_dir) * 32767).astype(np.int16))[None, :]
    lengths = torch.tensor([audio.shape[1]])
    with torch.no_grad():
        assert torch.equal(model.classify(audio, lengths), loaded.classify(audio, lengths))


def test_labels_default_to_esd_and_id2label_follows_model_labels():
    model = EmotionClassifier(build_encoder("tiny"))
    assert model.labels == tuple(EMOTIONS) and model.config.id2label == dict(enumerate(EMOTIONS))
    model.labels = ["a", "b", "c", "d", "e"]
    assert model.config.id2label[4] == "e" and model.config.label2id["a"] == 0
    with pytest.raises(ValueError, match="5 classes"):
        model.labels = ["a", "b"]


@pytest.fixture(scope="module")
def logged_model(demo_dir, tmp_path_factory):
    """(tracking URI, run id, the model as saved) of a run whose model was logged through the trial's logger."""
    root = tmp_path_factory.mktemp("logged")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("e", artifact_location=(root / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    torch.manual_seed(1)
    model = EmotionClassifier(build_encoder("tiny")).eval()
    MlflowRunLogger(uri, run_id).log_model(str(save_model(model, root / "saved")))
    return uri, run_id, model


def test_the_logged_model_is_a_pyfunc_with_a_signature_and_answers_like_the_model(logged_model, demo_dir):
    import mlflow

    uri, run_id, model = logged_model
    mlflow.set_tracking_uri(uri)
    pyfunc = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    signature = pyfunc.metadata.signature
    assert signature.inputs.input_names() == ["audio"]
    assert signature.outputs.input_names() == ["label", *EMOTIONS]
    clips = [clip_of(demo_dir, 1.0), clip_of(demo_dir, 0.5)]
    answer = pyfunc.predict(pd.DataFrame({"audio": clips}))
    expected = np.stack([clip_probabilities(model, clip) for clip in clips])
    np.testing.assert_allclose(answer[list(EMOTIONS)].to_numpy(), expected, rtol=1e-5, atol=1e-6)
    assert list(answer["label"]) == [EMOTIONS[i] for i in expected.argmax(axis=1)]
    downloaded = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model", tracking_uri=uri)
    assert load_model(downloaded).labels == tuple(EMOTIONS)  # the MLflow Model directory loads as it is


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_mlflow_models_serve_answers_a_scoring_request(logged_model, demo_dir, tmp_path):
    uri, run_id, _ = logged_model
    port = free_port()
    # mlflow execs `uvicorn` by name: the venv's bin must be on PATH even when the venv is not activated.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": path}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"runs:/{run_id}/model"]
        + ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "serve.log", "w"),
        start_new_session=True,
    )
    try:
        request = json.dumps({"dataframe_split": {"columns": ["audio"], "data": [[clip_of(demo_dir, 0.5).tolist()]]}})
        answer = None
        for _ in range(600):  # the server imports torch and loads the model first
            if server.poll() is not None:
                pytest.fail(f"the server exited: {(tmp_path / 'serve.log').read_text()[-2000:]}")
            try:
                post = urllib.request.Request(
                    f"http://127.0.0.1:{port}/invocations",
                    data=request.encode(),
                    headers={"Content-Type": "application/json"},
                )
                answer = json.loads(urllib.request.urlopen(post, timeout=30).read())
                break
            except OSError:
                time.sleep(0.5)
        assert answer is not None, (tmp_path / "serve.log").read_text()[-2000:]
        (row,) = answer["predictions"]
        assert row["label"] in EMOTIONS
        assert sum(row[label] for label in EMOTIONS) == pytest.approx(1.0, abs=1e-6)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)


@pytest.mark.slow
def test_register_puts_the_best_trial_in_the_registry_and_predict_answers_from_it(
    demo_dir, local_ray, tmp_path, capsys
):
    from orchestrator import predict, sweep
    from orchestrator.results import load_sweep

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    argv = ["smoke", "--data", str(demo_dir), "--tracking-uri", uri, "--storage", str(tmp_path / "ray")]
    argv += ["--set", "schedule=full", "--set", "epoch_scale=0.25", "--register", "emotion"]
    assert sweep.main(argv) == 0
    client = MlflowClient(uri)
    parent = next(
        r
        for r in client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
        if "mlflow.parentRunId" not in r.data.tags
    )
    best = load_sweep(client, parent).best()
    champion = client.get_model_version_by_alias("emotion", "champion")
    assert champion.run_id == best.run_id
    audio = tmp_path / "clip.wav"
    sf.write(audio, clip_of(demo_dir).astype(np.float32), 16_000)
    capsys.readouterr()
    assert predict.main(["--model", "models:/emotion@champion", "--tracking-uri", uri, str(audio), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["answered"] == 1 and result["model"] == {"model_uri": "models:/emotion@champion"}
    assert sum(result["files"][0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
