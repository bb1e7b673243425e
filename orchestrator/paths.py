"""Default locations: everything under the current directory unless a flag says otherwise."""

from __future__ import annotations

import os
from pathlib import Path

from shards.writer import MANIFEST_NAME, read_manifest


def default_mlruns() -> Path:
    return Path.cwd() / "mlruns"


def default_tracking_uri() -> str:
    # Absolute: Ray trials run in their own session folders, where a relative sqlite URI
    # would silently create a second database.
    return f"sqlite:///{default_mlruns() / 'mlflow.db'}"


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
