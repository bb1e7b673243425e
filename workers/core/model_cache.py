"""A node's cache of models fetched from a tracking server (`init_from` given as an MLflow URI).

Keyed by what the URI names, never by its text: a registry alias (`models:/emotion@champion`) or
`latest` is resolved to the version it points at now, and the key holds the tracking server, the
model's name, version and creation time (or the run id and path of `runs:/`, or the logged model's
id), so an alias that moved, or the same `models:/x/1` on two servers, fetch their own model.

A download lands in a directory of its own beside the cache and becomes the cache entry by one
rename once it is complete: a download that was killed halfway never counts as an entry (what it
left is deleted by the next download of the same model). Trials sharing a node download once
(a file lock per entry).

    $EMOTION_SWEEP_CACHE/models/<key>/model     (default ~/.cache/emotion-sweep/models)
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

MODEL_DIR = "model"
PARTIAL_SUFFIX = ".partial-"


@dataclass(frozen=True)
class ResolvedModel:
    uri: str  # a URI that names this model alone (an alias or `latest` replaced by the version)
    identity: tuple  # what the cache key is made of: server, then the model's own ids


def cache_root() -> Path:
    return Path(os.environ.get("EMOTION_SWEEP_CACHE", Path.home() / ".cache" / "emotion-sweep")) / "models"


def resolve(uri: str, tracking_uri: str | None) -> ResolvedModel:
    """The model `uri` names on the server now: `models:/NAME@ALIAS` and `models:/NAME/latest` pinned to a version."""
    from mlflow.tracking import MlflowClient

    server = server_of(tracking_uri)
    if uri.startswith("runs:/"):
        run_id, _, path = uri.removeprefix("runs:/").partition("/")
        return ResolvedModel(uri, (server, "run", run_id, path.strip("/")))
    if not uri.startswith("models:/"):
        return ResolvedModel(uri, (server, "uri", uri))
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    rest = uri.removeprefix("models:/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        version = client.get_model_version_by_alias(name, alias)
    elif "/" in rest:
        name, label = rest.split("/", 1)
        version = _version(client, name, label.strip("/"))
    else:  # models:/m-<id>: a logged model, immutable
        return ResolvedModel(uri, (server, "logged model", rest))
    pinned = f"models:/{name}/{version.version}"
    return ResolvedModel(pinned, (server, "registered", name, str(version.version), version.creation_timestamp))


def _version(client, name: str, label: str):
    if label.isdigit():
        return client.get_model_version(name, label)
    if label == "latest":
        versions = client.search_model_versions(f"name = '{name}'")
        if not versions:
            raise ValueError(f"models:/{name}/latest: the registered model {name!r} has no version")
        return max(versions, key=lambda v: int(v.version))
    latest = client.get_latest_versions(name, stages=[label])  # a (deprecated) stage name
    if not latest:
        raise ValueError(f"models:/{name}/{label}: no version of {name!r} is in stage {label!r}")
    return latest[0]


def server_of(tracking_uri: str | None) -> str:
    """The tracking server as one string: a local store by its absolute path, a remote one by its URI."""
    import mlflow

    uri = tracking_uri or mlflow.get_tracking_uri()
    for prefix in ("sqlite:///", "file://"):
        if uri.startswith(prefix):
            return prefix + str(Path(uri.removeprefix(prefix)).resolve())
    if "://" not in uri:
        return str(Path(uri).resolve())
    return uri.rstrip("/")


def cache_key(model: ResolvedModel) -> str:
    return hashlib.sha256(json.dumps(model.identity, default=str).encode()).hexdigest()[:24]


def cached_model_dir(uri: str, tracking_uri: str | None, download) -> Path:
    """The cached copy of the model `uri` names now, downloaded first when absent.

    `download(uri, directory, tracking_uri)` fetches the artifact into the (empty) `directory` and returns
    the model's directory: `directory` itself or the one directory inside it."""
    model = resolve(uri, tracking_uri)
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    target = root / cache_key(model)
    with open(root / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # trials sharing a node download it once
        if not (target / MODEL_DIR).is_dir():
            for leftover in root.glob(f"{target.name}{PARTIAL_SUFFIX}*"):
                shutil.rmtree(leftover, ignore_errors=True)  # a killed download's (this lock allows one writer)
            _download_atomically(model, tracking_uri, target, download)
    return target / MODEL_DIR


def _download_atomically(model: ResolvedModel, tracking_uri: str | None, target: Path, download) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f"{target.name}{PARTIAL_SUFFIX}", dir=target.parent))
    try:
        fetched = staging / "fetched"
        fetched.mkdir()
        local = Path(download(model.uri, fetched, tracking_uri)).resolve()
        if local not in (fetched.resolve(), *(p.resolve() for p in fetched.iterdir() if p.is_dir())):
            raise ValueError(f"{model.uri} downloaded to {local}, not a directory of its own in {fetched}")
        local.rename(staging / MODEL_DIR)
        if fetched.exists():
            fetched.rmdir()
        (staging / "source.json").write_text(json.dumps({"uri": model.uri, "identity": model.identity}, default=str))
        shutil.rmtree(target, ignore_errors=True)  # an entry of the earlier layout, or one without its model
        staging.rename(target)  # complete, or not there at all
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
