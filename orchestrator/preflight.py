"""Checks the driver runs before any trial starts, so a bad input costs one line, not a sweep of tracebacks.

In the order the driver calls them (after `orchestrator.sweep.parse_overrides` checked the `--set` keys
and values, before any work): a speaker leak that a `--set` split makes, the tracking server (on a Ray
cluster of several nodes, a server: never a local file), the data
directory and its manifest, every trial against that data (speakers, empty sets, held-out clips per
class), and every distinct start's weights. Each failure is a
`PreflightError`: one line that says what to change.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

from workers.finetune.config import RANDOM_STARTS, START_MODELS
from workers.vocabulary import ConfigKey, Task

# A held-out set needs this many clips of each class the trial trains on: with one, a class's recall
# is all or nothing; with none, macro-F1 and the confusion matrix leave the class undefined. (Small
# on purpose: fixture corpora and single held-out speakers of small corpora must still run.)
MIN_HELD_OUT_CLIPS_PER_CLASS = 2
# Seconds to wait for a tracking server or the hub before calling it unreachable.
PROBE_TIMEOUT_S = 5
# The port the head's tracking server listens on (deploy/mlflow_server.py, cluster.yaml, deploy/slurm, deploy/kuberay).
HEAD_TRACKING_PORT = 5000
# Ray's resource that only the head node carries.
HEAD_NODE_RESOURCE = "node:__internal_head__"
# A start's weights are there when its config is (weights are fetched together with it).
WEIGHTS_MARKER = "config.json"


class PreflightError(ValueError):
    """A reason not to start the sweep, in one line."""


# ---------------------------------------------------------------- before any work


def check_speaker_leak(base: dict) -> None:
    """A speaker both in training and in a held-out set (through --set train_speakers or eval_sets)."""
    train = set(base.get(ConfigKey.TRAIN_SPEAKERS, ()))
    for name, speakers in (base.get(ConfigKey.EVAL_SETS) or {}).items():
        leaked = sorted(train & set(speakers))
        if leaked:
            raise PreflightError(
                f"speaker(s) {leaked} are in both train_speakers and held-out set {name!r}: "
                "a test speaker must never be seen in training"
            )


def check_tracking(tracking_uri: str) -> None:
    """A tracking server answers within seconds (local SQLite stores are created on demand)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    from orchestrator import tracking

    with _environment(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT=str(PROBE_TIMEOUT_S)):
        try:
            tracking.client_for(tracking_uri).search_experiments(max_results=1)
        except Exception as error:  # refused, timed out, not an MLflow server: the sweep cannot log either way
            raise PreflightError(
                f"cannot reach the MLflow tracking server at {tracking_uri} ({_reason(error)}; waited at most "
                f"{PROBE_TIMEOUT_S} s): start it, or pass another --tracking-uri"
            ) from None


def is_local_store(tracking_uri: str) -> bool:
    """A store that lives in this machine's files (SQLite, MLflow's file store), not behind a server."""
    return tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri


def check_cluster_tracking(tracking_uri: str, address: str | None, need: dict[str, float] | None = None) -> None:
    """On a Ray cluster of more than one node, refuse a local store before any trial: each node's trials
    would write a file on their own node's disk, and the sweep's parent run would never see them. The same on
    one node that cannot run a trial itself (`need`: CPU and GPU of one trial): an autoscaling head
    (cluster.yaml's offers no CPU) runs every trial on nodes still to come.

    Connects the driver to Ray (`address` given and the store local only: nothing to check otherwise)."""
    if address is None or not is_local_store(tracking_uri):
        return
    import ray

    from orchestrator.tuner import init_ray

    init_ray(address)
    problem = cluster_store_problem(tracking_uri, [n for n in ray.nodes() if n.get("Alive")], need)
    if problem:
        raise PreflightError(problem)


def cluster_store_problem(tracking_uri: str, nodes: list[dict], need: dict[str, float] | None = None) -> str:
    """Why `tracking_uri` cannot serve a sweep on these alive Ray nodes (`ray.nodes()` entries); '' when it can."""
    if not nodes or not is_local_store(tracking_uri):
        return ""
    if len(nodes) == 1:
        have = nodes[0].get("Resources", {})
        short = {k: v for k, v in (need or {}).items() if v > 0 and have.get(k, 0.0) < v}
        if not short:
            return ""
        where = f"a Ray cluster whose only node cannot run a trial (it needs {short}; trials go to nodes it adds)"
    else:
        where = f"a Ray cluster of {len(nodes)} nodes"
    heads = [n for n in nodes if HEAD_NODE_RESOURCE in n.get("Resources", {})]
    head = (heads or nodes)[0].get("NodeManagerAddress", "HEAD_IP")
    return (
        f"refusing the local MLflow store {tracking_uri} on {where} (trials on other nodes would log to files "
        f"on their own disks): pass --tracking-uri http://{head}:{HEAD_TRACKING_PORT}, the head's server "
        "(python -m deploy.mlflow_server start), or export MLFLOW_TRACKING_URI"
    )


def _reason(error: Exception) -> str:
    """The OS's words for a failed connection (e.g. '[Errno 111] Connection refused'), else the first line."""
    found = re.search(r"\[Errno -?\d+\] [^'\")\]]+", str(error))
    if found:
        return found.group(0).strip()
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return lines[0][:160]


@contextmanager
def _environment(**values: str):
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ---------------------------------------------------------------- the data


def open_data(data_dir: Path) -> dict:
    """The manifest of `--data`; a missing directory or an unreadable manifest is one line."""
    from shards.writer import ManifestError, read_manifest

    if not data_dir.is_dir():
        raise PreflightError(f"--data {data_dir}: no such directory")
    try:
        return read_manifest(data_dir)
    except (FileNotFoundError, ManifestError) as error:
        raise PreflightError(str(error)) from None


def check_trials(variants: Iterable, manifest: dict, data_dir: Path) -> None:
    """Every trial's speakers exist in the data, its training and held-out sets hold clips, and each
    held-out set has at least MIN_HELD_OUT_CLIPS_PER_CLASS clips of every emotion the trial trains on."""
    from shards.writer import manifest_labels

    labels = manifest_labels(manifest)  # the corpus's own label set (ESD's five for ESD)
    known = manifest["speakers"]
    counts: dict[str, dict[str, int]] = manifest["counts"]
    checked: set[tuple] = set()
    for variant in variants:
        train = tuple(variant.values.get(ConfigKey.TRAIN_SPEAKERS, ()))
        eval_sets = {k: tuple(v) for k, v in (variant.values.get(ConfigKey.EVAL_SETS) or {}).items()}
        key = (train, tuple(sorted(eval_sets.items())))
        if key in checked:
            continue
        checked.add(key)
        where = f"trial {variant.scenario}{'/' + variant.fold if variant.fold else ''}"
        unknown = sorted({*train, *(s for group in eval_sets.values() for s in group)} - set(known))
        if unknown:
            raise PreflightError(
                f"{where}: speaker(s) {unknown} are not in {data_dir}; it has {', '.join(sorted(known))}"
            )
        trained = [e for e in labels if any(counts.get(s, {}).get(e, 0) for s in train)]
        if not trained:
            raise PreflightError(f"{where}: no training clips (train_speakers={list(train)})")
        for name, speakers in eval_sets.items():
            per_class = {e: sum(counts.get(s, {}).get(e, 0) for s in speakers) for e in trained}
            if not sum(per_class.values()):
                raise PreflightError(f"{where}: held-out set {name!r} has no clips (speakers {list(speakers)})")
            short = {e: n for e, n in per_class.items() if n < MIN_HELD_OUT_CLIPS_PER_CLASS}
            if short and variant.values.get(Task.KEY) != Task.DIMENSIONS:  # scored by CCC, not per class
                raise PreflightError(
                    f"{where}: held-out set {name!r} (speakers {list(speakers)}) has fewer than "
                    f"{MIN_HELD_OUT_CLIPS_PER_CLASS} clips of {', '.join(f'{e} ({n})' for e, n in short.items())}"
                )


# ---------------------------------------------------------------- start weights


def check_starts(variants: Iterable) -> None:
    """Every distinct start of the trials can be loaded: a random-weight config, a local directory, the
    prefetched `weights_dir`, the Hugging Face cache, or (online) the hub, asked once with a short timeout."""
    starts = {
        (v.values.get("start", "tiny"), v.values.get("start_revision", ""), v.values.get("weights_dir", ""))
        for v in variants
        if not v.values.get("init_from")  # a trial from a saved emotion model never loads its start
    }
    for start, revision, weights_dir in sorted(starts):
        problem = start_problem(start, revision, weights_dir)
        if problem:
            raise PreflightError(
                f"start {start!r}: {problem}. Fetch it with `python -m orchestrator.weights fetch {start} --dir DIR` "
                "and --set weights_dir=DIR"
            )


def start_problem(start: str, revision: str = "", weights_dir: str = "") -> str:
    """Why the start's weights cannot be had ('' when they can)."""
    if start in RANDOM_STARTS:
        return ""
    source = START_MODELS.get(start, start)
    if Path(source).expanduser().is_dir():
        has_config = (Path(source).expanduser() / WEIGHTS_MARKER).is_file()
        return "" if has_config else f"{source} holds no {WEIGHTS_MARKER} (not a save_pretrained directory)"
    from huggingface_hub import try_to_load_from_cache

    if weights_dir:
        found = try_to_load_from_cache(source, WEIGHTS_MARKER, cache_dir=weights_dir, revision=revision or None)
        return "" if isinstance(found, str) else f"{source} is not in weights_dir={weights_dir}"
    if isinstance(try_to_load_from_cache(source, WEIGHTS_MARKER, revision=revision or None), str):
        return ""
    return _hub_problem(source, revision)


def _hub_problem(source: str, revision: str) -> str:
    from huggingface_hub import HfApi
    from huggingface_hub.constants import HF_HUB_OFFLINE

    if HF_HUB_OFFLINE:
        return f"{source} is not in the Hugging Face cache and HF_HUB_OFFLINE is set"
    try:
        HfApi().model_info(source, revision=revision or None, timeout=PROBE_TIMEOUT_S)
    except Exception as error:  # connection, auth, missing repo: all mean this start cannot be had
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        return f"{source} is neither cached nor reachable on the hub ({first})"
    return ""
