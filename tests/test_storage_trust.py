"""The worker role the README documents may write trial checkpoints and nothing `--resume` unpickles."""

from __future__ import annotations

import json
import re
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
CLUSTER_YAML = README.with_name("cluster.yaml")


def worker_policy() -> dict:
    text = README.read_text()
    block = re.search(r"The worker role's S3 policy:\s*```json\n(.*?)```", text, re.S)
    assert block, "README documents no S3 policy for the worker role"
    return json.loads(block.group(1))


def may_write(policy: dict, key: str) -> bool:
    """IAM's rule: an explicit Deny wins, else any Allow; `*` in a resource matches across '/'."""
    arn = f"arn:aws:s3:::BUCKET/{key}"

    def matches(statement: dict) -> bool:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        return "s3:PutObject" in actions and any(fnmatchcase(arn, r) for r in resources)

    statements = policy["Statement"]
    if any(s["Effect"] == "Deny" and matches(s) for s in statements):
        return False
    return any(s["Effect"] == "Allow" and matches(s) for s in statements)


@pytest.mark.parametrize(
    "key",
    [
        "ray/smoke-20261201-120000-abcd1234/main/train_emotion_3f2a1_00000_0/checkpoint_000002/model.safetensors",
        "ray/smoke-20261201-120000-abcd1234/main/train_emotion_3f2a1_00000_0/checkpoint_000002/train_state.json",
        "ray/smoke-20261201-120000-abcd1234/main-train/trial-3f2a1_00000/checkpoint_000001/model.safetensors",
    ],
)
def test_workers_may_write_their_checkpoints(key):
    assert may_write(worker_policy(), key)


@pytest.mark.parametrize(
    "key",
    [
        "ray/smoke-20261201-120000-abcd1234/main/tuner.pkl",
        "ray/smoke-20261201-120000-abcd1234/main/experiment_state-2026-12-01_12-00-00.json",
        "ray/smoke-20261201-120000-abcd1234/main/train_emotion_3f2a1_00000_0/params.pkl",
        "ray/smoke-20261201-120000-abcd1234/main/train_emotion_3f2a1_00000_0/checkpoint_000002/../../tuner.pkl",
        "ray/smoke-20261201-120000-abcd1234/main/train_emotion_3f2a1_00000_0/result.json",
        "mlflow/mlflow.db",
    ],
)
def test_workers_may_not_write_what_resume_unpickles_or_the_head_owns(key):
    assert not may_write(worker_policy(), key)


def test_the_docs_say_the_storage_must_be_trusted():
    assert "The storage must be trusted" in README.read_text()
    assert "UNPICKLES" in CLUSTER_YAML.read_text()
