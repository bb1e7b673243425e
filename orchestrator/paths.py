"""Default locations: everything under the current directory unless a flag says otherwise."""

from __future__ import annotations

import os
from pathlib import Path

from shards.writer import MANIFEST_NAME, read_manifest


def default_mlruns() -> Path:
    return Path.cwd() / "mlruns"


TRACKING_URI_HELP = (
    "MLflow tracking URI; default: $MLFLOW_TRACKING_URI, else SQLite under ./mlruns. With --resume: the sweep's "
    "store at a new address (e.g. the tracking server of a new SLURM job); default: where the sweep started"
)


def default_tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` when set (as MLflow users expect), else SQLite under ./mlruns.

    Always absolute: Ray trials run in their own session folders, where a relative sqlite URI
    would silently create a second database.
    """
    from_env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if from_env:
        return absolute_tracking_uri(from_env)
    return f"sqlite:///{default_mlruns() / 'mlflow.db'}"


def absolute_tracking_uri(uri: str) -> str:
    """A sqlite URI or plain path made absolute against the current directory; others as given."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{(Path.cwd() / uri.removeprefix('sqlite:///')).resolve()}"
    if "://" not in uri:
        return Path(uri).resolve().as_uri()
    return uri


def default_storage() -> Path:
    return Path.cwd() / "ray_results"


def demo_cache_dir(seed: int) -> Path:
    root = Path(os.environ.get("EMOTION_SWEEP_CACHE", Path.home() / ".cache" / "emotion-sweep"))
    return root / f"demo-seed{seed}"


def ensure_demo_corpus(seed: int = 0, log=print) -> Path:
    """The built-in demo corpus, built once and reused (rebuilt if its demo version changed)."""
    from shards.demo import DEMO_VERSION, build_demo_corpus

    out = demo_cache_dir(seed)
    if (out / MANIFEST_NAME).exists() and read_manifest(out).get("source", {}).get("version") == DEMO_VERSION:
        return out
    log(f"building the demo corpus in {out} (once) ...")
    manifest = build_demo_corpus(out, seed=seed)
    log(
        f"demo corpus: {manifest['num_clips']} clips, {manifest['total_seconds'] / 60:.1f} min, "
        f"{len(manifest['speakers'])} speakers"
    )
    return out
