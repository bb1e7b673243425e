"""Shared fixtures: a small demo corpus on disk, a local Ray, an MLflow store in a temp dir."""

from __future__ import annotations

import os

import pytest
import torch

# On 2 cores, default threading made the tiny model ~50x slower (oversubscription).
torch.set_num_threads(1)
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    """A small demo corpus (6 clips per speaker and emotion), built once per test session."""
    from shards.demo import build_demo_corpus

    out = tmp_path_factory.mktemp("demo")
    build_demo_corpus(out, seed=0, clips_per_emotion=6)
    return out


@pytest.fixture(scope="session")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=True, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture
def tracking_uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
