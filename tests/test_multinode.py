"""A real two-node Ray cluster on this machine: two `ray start` processes on loopback, one CPU each,
and the head's MLflow server on loopback as the store (exported to the head as MLFLOW_TRACKING_URI,
as cluster.yaml does).

What a user does on a running cluster, end to end: `ray job submit` to the head's job server places
trials on both nodes; a data-parallel trial's two workers must split over the nodes (each has one
CPU); one MLflow run per trial reaches the server; and a local SQLite store is refused in one line
before any trial. The project reaches the nodes as an installed package (PYTHONPATH here), never with
`--working-dir`: two raylets on one machine share one runtime_resources folder, and one node's agent
deletes a job's working directory when its own trials end.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy import mlflow_server
from orchestrator.local_ray import stop_recorded

ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).with_name("ray"))
# A quick smoke sweep: one schedule, a quarter of the epochs (2 trials: the learning-rate grid).
QUICK = ["--set", "schedule=full", "--set", "epoch_scale=0.25", "--set", "eval_every_steps=5"]
START_TIMEOUT_S = 120


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


@dataclass
class TwoNodes:
    gcs: str  # host:port, for --address
    dashboard: str  # http://..., the job server and the state API
    tracking_uri: str  # the head's MLflow server
    env: dict  # what a client of this cluster needs (token, temp dir, the project on PYTHONPATH)
    root: Path

    def run(self, command: list[str], timeout_s: float, cwd: Path | None = None) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(
                command, env=self.env, cwd=cwd or self.root, capture_output=True, text=True, timeout=timeout_s
            )
        except subprocess.TimeoutExpired as error:
            pytest.fail(f"{command[:4]} hung for {timeout_s} s\n{(error.stdout or '')[-4000:]}")

    def nodes(self) -> list[dict]:
        listed = self.run([RAY, "list", "nodes", "--address", self.dashboard, "--format", "json"], 60)
        return json.loads(listed.stdout) if listed.returncode == 0 else []


def start_node(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """`ray start` in a session of its own: everything the node spawns stays in it, for `stop_session`."""
    with open(log, "ab") as out:
        started = subprocess.Popen(
            [RAY, "start", "--disable-usage-stats", "--node-ip-address", "127.0.0.1", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    if started.wait(timeout=START_TIMEOUT_S) != 0:
        raise RuntimeError(f"ray start failed:\n{log.read_text()[-3000:]}")
    return started


def stop_session(session_id: int) -> None:
    """SIGTERM then SIGKILL every process of one node's session (never `ray stop`: it stops every Ray here)."""
    import psutil

    members = []
    for process in psutil.process_iter(["pid"]):
        try:
            if os.getsid(process.pid) == session_id:
                members.append({"pid": process.pid, "create_time": process.create_time()})
        except (OSError, psutil.Error):
            pass
    stop_recorded(members, timeout_s=5.0)


def node_ports(head: bool) -> list[str]:
    """Every port a node opens, chosen free: a second raylet (or another job's Ray) must not collide."""
    names = [
        "--node-manager-port",
        "--object-manager-port",
        "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port",
        "--runtime-env-agent-port",
        "--metrics-export-port",
    ]
    if head:
        names += ["--ray-client-server-port"]
    return [part for name, port in zip(names, free_ports(len(names))) for part in (name, str(port))]


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    root = tmp_path_factory.mktemp("two-nodes")
    ray_tmp = Path(tempfile.mkdtemp(prefix="es-2n-", dir="/tmp"))  # socket paths are capped at 107 bytes
    server_port, gcs_port, dashboard_port = free_ports(3)
    server = mlflow_server.launch(
        "127.0.0.1", server_port, root / "server" / "mlflow.db", str(root / "server" / "artifacts"), 1, root / "m.log"
    )
    tracking_uri = f"http://127.0.0.1:{server_port}"
    token = root / "ray_auth_token"
    token.write_text(uuid.uuid4().hex)
    env = {
        **os.environ,
        "RAY_TMPDIR": str(ray_tmp),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_AIR_NEW_OUTPUT": "0",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "EMOTION_SWEEP_CACHE": str(root / "cache"),
    }
    for inherited in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "MLFLOW_TRACKING_URI"):
        env.pop(inherited, None)
    sessions = []
    try:
        head_env = {**env, "MLFLOW_TRACKING_URI": tracking_uri}  # as cluster.yaml's head exports it
        head_args = ["--head", "--port", str(gcs_port), "--num-cpus", "1", "--include-dashboard", "true"]
        head_args += ["--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port), *node_ports(True)]
        sessions.append(start_node(head_args, head_env, root / "head.log").pid)
        worker_args = ["--address", f"127.0.0.1:{gcs_port}", "--num-cpus", "1", *node_ports(False)]
        sessions.append(start_node(worker_args, env, root / "worker.log").pid)
        cluster = TwoNodes(f"127.0.0.1:{gcs_port}", f"http://127.0.0.1:{dashboard_port}", tracking_uri, env, root)
        mlflow_server.wait_healthy(tracking_uri, 120, server, root / "m.log")
        deadline = time.monotonic() + START_TIMEOUT_S
        while len([n for n in cluster.nodes() if n["state"] == "ALIVE"]) < 2:
            assert time.monotonic() < deadline, "the second node never joined"
            time.sleep(1)
        yield cluster
    finally:
        for session in sessions:
            stop_session(session)
        mlflow_server.stop_process_group(server.pid, process=server)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def sweep_runs(tracking_uri: str, experiment: str) -> tuple[object, list]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return parent, [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


@pytest.mark.slow
def test_a_local_store_is_refused_in_one_line_before_any_trial(two_nodes, demo_dir):
    store = two_nodes.root / "refused" / "mlflow.db"
    sweep = [sys.executable, "-m", "orchestrator.sweep", "smoke", "--address", two_nodes.gcs, "--data", str(demo_dir)]
    done = two_nodes.run([*sweep, "--tracking-uri", f"sqlite:///{store}", "--storage", str(store.parent)], 120)
    assert done.returncode == 1, done.stdout + done.stderr
    [line] = [text for text in done.stderr.splitlines() if "refusing" in text]
    [head] = [n for n in two_nodes.nodes() if n["is_head_node"]]
    assert f"--tracking-uri http://{head['node_ip']}:5000" in line and "2 nodes" in line
    assert not store.parent.exists()  # no store, no parent run, no sweep directory


@pytest.mark.slow
def test_ray_job_submit_spreads_trials_over_both_nodes_into_the_heads_server(two_nodes, demo_dir):
    # The driver runs on the head and inherits its MLFLOW_TRACKING_URI: no --tracking-uri given.
    storage = two_nodes.root / "job-results"
    entrypoint = [sys.executable, "-m", "orchestrator.sweep", "smoke", "--address", "auto", "--data", str(demo_dir)]
    entrypoint += ["--storage", str(storage), "--experiment", "job", "--cpus-per-trial", "1", *QUICK]
    done = two_nodes.run([RAY, "job", "submit", "--address", two_nodes.dashboard, "--", *entrypoint], 420)
    assert done.returncode == 0 and "succeeded" in done.stdout, (done.stdout + done.stderr)[-6000:]

    parent, children = sweep_runs(two_nodes.tracking_uri, "job")
    assert parent.info.status == "FINISHED" and len(children) == 2  # one run per trial
    assert {c.info.status for c in children} == {"FINISHED"}
    assert len({c.data.tags["trial_id"] for c in children}) == 2
    alive = {n["node_id"] for n in two_nodes.nodes() if n["state"] == "ALIVE"}
    assert {c.data.tags["ray_node_id"] for c in children} == alive  # one trial on each node
    for child in children:
        assert "test_en/accuracy" in child.data.metrics
    assert (storage / parent.data.tags["sweep_dir"].rsplit("/", 1)[-1]).is_dir()


@pytest.mark.slow
def test_a_data_parallel_trials_workers_split_over_the_nodes(two_nodes, demo_dir):
    # 0.6 CPU per worker on nodes of 1 CPU: the two workers cannot share a node.
    sweep = [sys.executable, "-m", "orchestrator.sweep", "smoke", "--address", two_nodes.gcs, "--data", str(demo_dir)]
    sweep += ["--tracking-uri", two_nodes.tracking_uri, "--storage", str(two_nodes.root / "dp-results")]
    sweep += ["--experiment", "dp", "--workers-per-trial", "2", "--cpus-per-trial", "0.6", *QUICK]
    done = two_nodes.run([*sweep, "--set", "learning_rate=1e-3", "--quiet"], 420)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]

    parent, [child] = sweep_runs(two_nodes.tracking_uri, "dp")
    assert parent.info.status == child.info.status == "FINISHED"
    ranks = child.data.tags["train_worker_nodes"].split(",")
    alive = {n["node_id"] for n in two_nodes.nodes() if n["state"] == "ALIVE"}
    assert len(ranks) == 2 and set(ranks) == alive
    assert "test_en/accuracy" in child.data.metrics
