"""`init_from` as an MLflow URI: the node's cache fetches the model the URI names now, from the server it is on,
and only a complete download counts (workers/core/model_cache.py, through workers.trial.local_model_dir)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator import tracking
from workers.core.tracking import download_model
from workers.trial import local_model_dir


def logged_model(client: MlflowClient, experiment_id: str, tmp_path: Path, content: str) -> str:
    """A run whose `model/` artifact is a directory holding `content`; its run id."""
    run_id = client.create_run(experiment_id).info.run_id
    directory = tmp_path / f"src-{run_id}" / "model"
    directory.mkdir(parents=True)
    (directory / "weights.txt").write_text(content)
    client.log_artifacts(run_id, str(directory), "model")
    client.set_terminated(run_id)
    return run_id


def store(tmp_path: Path, name: str) -> tuple[str, MlflowClient, str]:
    uri = f"sqlite:///{tmp_path / name / 'mlflow.db'}"
    (tmp_path / name).mkdir()
    client = MlflowClient(uri, registry_uri=uri)
    experiment_id = client.create_experiment("e", artifact_location=str(tmp_path / name / "artifacts"))
    return uri, client, experiment_id


def register(client: MlflowClient, run_id: str, name: str) -> str:
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    source = client.get_run(run_id).info.artifact_uri + "/model"
    return client.create_model_version(name, source, run_id=run_id).version


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOTION_SWEEP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "models"


def weights(directory: str) -> str:
    return (Path(directory) / "weights.txt").read_text()


def test_an_alias_that_moved_fetches_the_version_it_names_now(tmp_path):
    uri, client, experiment = store(tmp_path, "server")
    first = register(client, logged_model(client, experiment, tmp_path, "v1"), "emotion")
    client.set_registered_model_alias("emotion", "champion", first)
    assert weights(local_model_dir("models:/emotion@champion", uri)) == "v1"
    second = register(client, logged_model(client, experiment, tmp_path, "v2"), "emotion")
    client.set_registered_model_alias("emotion", "champion", second)
    assert weights(local_model_dir("models:/emotion@champion", uri)) == "v2"
    assert weights(local_model_dir("models:/emotion/1", uri)) == "v1"  # and the old version is still itself


def test_the_driver_pins_an_alias_to_its_version(tmp_path):
    uri, client, experiment = store(tmp_path, "server")
    register(client, logged_model(client, experiment, tmp_path, "v1"), "emotion")
    client.set_registered_model_alias(
        "emotion", "champion", register(client, logged_model(client, experiment, tmp_path, "v2"), "emotion")
    )
    assert tracking.pin_model_version(uri, "models:/emotion@champion") == "models:/emotion/2"
    assert tracking.pin_model_version(uri, "models:/emotion/1") == "models:/emotion/1"


def test_the_same_version_on_two_servers_is_two_models(tmp_path):
    fetched = []
    for server in ("a", "b"):
        uri, client, experiment = store(tmp_path, server)
        register(client, logged_model(client, experiment, tmp_path, f"from {server}"), "x")
        fetched.append(weights(local_model_dir("models:/x/1", uri)))
    assert fetched == ["from a", "from b"]


def test_a_download_that_died_halfway_is_never_the_cached_model(tmp_path, cache, monkeypatch):
    uri, client, experiment = store(tmp_path, "server")
    run_id = logged_model(client, experiment, tmp_path, "whole")
    model_uri = f"runs:/{run_id}/model"

    def dies_halfway(artifact_uri, destination, tracking_uri):
        (Path(destination) / "model").mkdir()
        (Path(destination) / "model" / "shard-1-of-2.bin").write_text("half")
        raise ConnectionError("connection reset")

    monkeypatch.setattr("workers.core.tracking.download_model", dies_halfway)
    with pytest.raises(ConnectionError):
        local_model_dir(model_uri, uri)
    monkeypatch.setattr("workers.core.tracking.download_model", download_model)
    directory = Path(local_model_dir(model_uri, uri))
    assert sorted(p.name for p in directory.iterdir()) == ["weights.txt"]
    assert [p.name for p in cache.iterdir() if "partial" in p.name] == []
