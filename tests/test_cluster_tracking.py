"""The rule a multi-node sweep's tracking store must follow: a server every node reaches, never a local file.
(The real two-node refusal, through the CLI, is in tests/test_multinode.py.)"""

from __future__ import annotations

import pytest

from orchestrator import preflight

HEAD = {"Alive": True, "NodeManagerAddress": "10.0.1.5", "Resources": {"CPU": 0.0, preflight.HEAD_NODE_RESOURCE: 1.0}}
WORKER = {"Alive": True, "NodeManagerAddress": "10.0.1.9", "Resources": {"CPU": 8.0, "GPU": 1.0}}


@pytest.mark.parametrize("uri", ["sqlite:////abs/mlruns/mlflow.db", "file:///abs/mlruns", "/abs/mlruns"])
def test_a_local_store_is_refused_on_two_nodes_naming_the_heads_server(uri):
    problem = preflight.cluster_store_problem(uri, [WORKER, HEAD])
    assert "\n" not in problem and uri in problem and "2 nodes" in problem
    assert "--tracking-uri http://10.0.1.5:5000" in problem  # the head's, though listed second


@pytest.mark.parametrize("uri", ["http://10.0.1.5:5000", "https://mlflow.lab.example", "postgresql://db/mlflow"])
def test_a_server_or_shared_database_is_fine_on_two_nodes(uri):
    assert preflight.cluster_store_problem(uri, [HEAD, WORKER]) == ""


def test_a_local_store_is_fine_on_one_node():
    assert preflight.cluster_store_problem("sqlite:////abs/mlruns/mlflow.db", [HEAD]) == ""


def test_no_address_means_the_sweeps_own_local_ray_and_no_check():
    preflight.check_cluster_tracking("sqlite:////abs/mlruns/mlflow.db", None)  # connects to nothing


def test_a_restored_experiment_follows_its_store_to_a_new_address(monkeypatch):
    """`--resume --tracking-uri URL` (a new SLURM job's server): Tune restores the trials' configs and the
    callbacks with the old address; the driver points both at the new one before any trial starts."""
    from types import SimpleNamespace

    from orchestrator import tuner
    from workers.payload import TRACKING as TRACKING_KEY

    callback = tuner.CloseChildRuns("http://10.0.0.1:20002", "1", "parent-run", {})
    restored = SimpleNamespace(config={TRACKING_KEY: {"tracking_uri": "http://10.0.0.1:20002", "experiment_id": "1"}})
    added = SimpleNamespace(config={TRACKING_KEY: {"tracking_uri": "http://10.0.0.1:20002"}})
    monkeypatch.setitem(tuner._STORE_URI, "parent-run", "http://10.0.0.7:20418")
    callback.on_step_begin(0, [restored])
    callback.on_trial_add(0, [restored, added], added)
    assert callback.tracking_uri == "http://10.0.0.7:20418"
    assert restored.config[TRACKING_KEY] == {"tracking_uri": "http://10.0.0.7:20418", "experiment_id": "1"}
    assert added.config[TRACKING_KEY]["tracking_uri"] == "http://10.0.0.7:20418"


def test_a_local_store_is_refused_on_one_node_that_cannot_run_a_trial():
    """cluster.yaml's head alone (no CPU): every trial runs on GPU nodes the autoscaler has yet to add."""
    head = {**HEAD, "Resources": {"CPU": 0.0, preflight.HEAD_NODE_RESOURCE: 1.0}}
    problem = preflight.cluster_store_problem("sqlite:////abs/mlflow.db", [head], {"CPU": 8, "GPU": 1})
    assert "cannot run a trial" in problem and "--tracking-uri http://10.0.1.5:5000" in problem
    fits = {**HEAD, "Resources": {"CPU": 8.0, "GPU": 1.0}}
    assert preflight.cluster_store_problem("sqlite:////abs/mlflow.db", [fits], {"CPU": 8, "GPU": 1}) == ""
