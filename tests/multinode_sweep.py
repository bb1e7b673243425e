"""A sweep on a local multi-node Ray cluster, in a process of its own (run by tests/test_cluster.py).

    python tests/multinode_sweep.py --data DIR --tracking-uri http://127.0.0.1:PORT --storage DIR \\
        --records DIR --out result.json

Starts a head with no CPU and two worker nodes that each declare one (fake) GPU, then runs
`orchestrator.sweep.main([... "--address", <cluster address>, "--gpus-per-trial", "1"])` against
it. The trainable is wrapped so every trial records, from inside its worker process, the Ray node
it ran on and each shard file it memory-mapped; the records go to JSON lines under --records.
The caller sets RAY_TMPDIR so this cluster's sessions and address file stay out of /tmp/ray.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
from pathlib import Path

RECORDS_ENV = "EMOTION_SWEEP_TEST_RECORDS"


def recording_train_emotion(config: dict) -> None:
    """The real trainable, plus a record of where the trial ran and which files it mapped."""
    import pickle

    import pyarrow
    import ray
    from ray import tune

    from workers.payload import TrialPayload
    from workers.trial import train_emotion

    trial_id = tune.get_context().get_trial_id()
    records = Path(os.environ[RECORDS_ENV]) / f"{trial_id}.jsonl"
    node_id = ray.get_runtime_context().get_node_id()

    def record(**values) -> None:
        with open(records, "a") as out:
            out.write(json.dumps({"trial_id": trial_id, "node_id": node_id, "pid": os.getpid(), **values}) + "\n")

    values = TrialPayload.from_config(config).values
    record(event="start", data_dir=values["data_dir"], config_bytes=len(pickle.dumps(config)))
    memory_map = pyarrow.memory_map

    def recording_memory_map(path, *args, **kwargs):
        record(event="memory_map", path=str(path))
        return memory_map(path, *args, **kwargs)

    pyarrow.memory_map = recording_memory_map
    try:
        train_emotion(config)
    finally:
        pyarrow.memory_map = memory_map  # actors are reused between trials


def wait_for_tracking_server(uri: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--storage", required=True)
    parser.add_argument("--records", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--server-timeout", type=float, default=180.0)
    args = parser.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    import workers.trial
    from orchestrator import sweep

    os.environ[RECORDS_ENV] = args.records  # set before the nodes start: their workers inherit it
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    gpu_nodes = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    try:
        wait_for_tracking_server(args.tracking_uri, args.server_timeout)  # it boots while the nodes do
        workers.trial.train_emotion = recording_train_emotion  # run_sweep imports it at call time
        code = sweep.main(
            [
                "smoke",
                "--address",
                cluster.address,
                "--data",
                args.data,
                "--tracking-uri",
                args.tracking_uri,
                "--storage",
                args.storage,
                "--gpus-per-trial",
                "1",
                "--cpus-per-trial",
                "1",
                "--set",
                "schedule=full",
                "--set",
                "epoch_scale=0.25",
                "--set",
                "eval_every_steps=5",
            ]
        )
        Path(args.out).write_text(
            json.dumps(
                {
                    "exit_code": code,
                    "address": cluster.address,
                    "head_node_id": cluster.head_node.node_id,
                    "gpu_node_ids": [node.node_id for node in gpu_nodes],
                }
            )
        )
    finally:
        ray.shutdown()
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
