"""cluster.yaml under Ray's own validator and bootstrap, its security properties, the head's MLflow
helper, and a sweep spread over a local multi-node Ray cluster that tracks into an MLflow server."""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import re
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
import yaml

from deploy import mlflow_server

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_YAML = ROOT / "cluster.yaml"
GPU_NODE_TYPES = ("gpu_1x_l40s", "gpu_1x_h100", "gpu_8x_h200")


def load_cluster() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def prepared_cluster(raw: dict | None = None) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(copy.deepcopy(raw or load_cluster()))
    validate_config(config)
    return config


def all_strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*all_strings(k), *all_strings(v))]
    if isinstance(value, list):
        return [s for item in value for s in all_strings(item)]
    return []


def commands(config: dict, key: str) -> list[str]:
    return [" ".join(c.split()) for c in config[key]]


# --- cluster.yaml: Ray's validator ---------------------------------------------------------------


def test_cluster_yaml_passes_rays_own_validation():
    # prepare_config merges Ray's AWS defaults (offline: no AWS call); validate_config checks the
    # result against ray-schema.json and the node-type rules.
    config = prepared_cluster()
    node_types = config["available_node_types"]
    assert config["head_node_type"] == "head" and node_types["head"]["resources"] == {"CPU": 0}
    gpus = {name: node_types[name]["resources"]["GPU"] for name in GPU_NODE_TYPES}
    assert gpus == {"gpu_1x_l40s": 1, "gpu_1x_h100": 1, "gpu_8x_h200": 8}
    for name in GPU_NODE_TYPES:  # autoscaling from zero, bounded
        assert node_types[name]["min_workers"] == 0 < node_types[name]["max_workers"]
    assert sum(node_types[name]["max_workers"] for name in GPU_NODE_TYPES) <= config["max_workers"]
    assert 0 < config["idle_timeout_minutes"] <= 30


def test_rays_validator_rejects_a_broken_cluster_yaml():
    import jsonschema

    broken = load_cluster()
    broken["available_node_types"]["gpu_1x_l40s"]["resources"] = {"GPU": "one"}
    with pytest.raises(jsonschema.ValidationError):
        prepared_cluster(broken)


def test_every_cluster_yaml_key_is_commented():
    """Each key has a comment on its own line or on the line right above it (list items of a
    commented key, like a BlockDeviceMappings entry, share their key's comment)."""
    lines = CLUSTER_YAML.read_text().splitlines()
    key_line = re.compile(r"^\s*[A-Za-z_/~][\w./~-]*:(\s|$)")
    uncommented = []
    for number, line in enumerate(lines):
        if key_line.match(line) and "#" not in line:
            above = next((text.strip() for text in reversed(lines[:number]) if text.strip()), "")
            if not above.startswith("#"):
                uncommented.append(line.strip())
    assert uncommented == []


# --- cluster.yaml: security ----------------------------------------------------------------------


def test_cluster_yaml_holds_no_credentials():
    text = CLUSTER_YAML.read_text()
    for pattern in (
        r"\b(AKIA|ASIA)[0-9A-Z]{16}\b",
        r"aws_secret_access_key",
        r"aws_access_key_id",
        r"AWS_SECRET",
        r"AWS_SESSION_TOKEN",
        r"PRIVATE KEY",
        r"RAY_AUTH_TOKEN\s*=",
        r"password",
    ):
        assert not re.search(pattern, text, re.IGNORECASE), pattern
    config = load_cluster()
    assert "ssh_private_key" not in config["auth"]  # Ray makes the key pair; it stays on the launcher
    for node_type in config["available_node_types"].values():  # AWS rights come from roles
        assert set(node_type["node_config"]["IamInstanceProfile"]) == {"Name"}
    # the token reaches nodes as a file mount from the launcher's ~/.ray, never as a value here
    assert config["file_mounts"]["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"


def test_cluster_yaml_opens_nothing_to_the_internet():
    config = load_cluster()
    for text in all_strings(config) + [(ROOT / "deploy" / "security_group.sh").read_text()]:
        assert "0.0.0.0" not in text and "::/0" not in text
    assert config["provider"]["use_internal_ips"] is True
    assert "security_group" not in config["provider"]  # Ray would add SSH from anywhere to its own group
    for node_type in config["available_node_types"].values():
        node_config = node_type["node_config"]
        assert node_config["SecurityGroupIds"] and node_config["SubnetIds"]
        assert "NetworkInterfaces" not in node_config  # no AssociatePublicIpAddress sneaking in
        assert node_config["MetadataOptions"] == {"HttpTokens": "required"}
    head_start = " ".join(commands(config, "head_start_ray_commands"))
    assert "--dashboard-host=127.0.0.1" in head_start


def test_ray_token_authentication_stays_on_for_every_node():
    config = load_cluster()
    assert "RAY_AUTH_MODE=token" in " ".join(commands(config, "initialization_commands"))
    starts = [
        c
        for c in commands(config, "head_start_ray_commands") + commands(config, "worker_start_ray_commands")
        if "ray start" in c
    ]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token ray start" in c for c in starts)
    assert "RAY_AUTH_MODE=disabled" not in CLUSTER_YAML.read_text()


def test_head_runs_mlflow_on_its_private_address_with_artifacts_in_the_bucket():
    config = load_cluster()
    [start] = [c for c in commands(config, "head_start_ray_commands") if "deploy.mlflow_server start" in c]
    argv = shlex.split(start.split("python -m deploy.mlflow_server", 1)[1])
    args = mlflow_server.parse_args(argv)  # the command the head runs parses with the helper's CLI
    assert args.command == "start" and args.host == "auto" and args.port == 5000
    env = " ".join(commands(config, "initialization_commands"))
    bucket = re.search(r"SWEEP_BUCKET=(\S+)", env).group(1)
    assert bucket.startswith("s3://") and args.artifacts.startswith("$SWEEP_BUCKET/")
    assert args.backup.startswith("$SWEEP_BUCKET/")
    head = lambda: {ipaddress.ip_address("10.0.12.34")}  # noqa: E731  the head's interface
    assert mlflow_server.resolve_host(args.host, detect=lambda: "10.0.12.34", local_addresses=head) == "10.0.12.34"
    with pytest.raises(SystemExit, match="refusing"):
        mlflow_server.resolve_host(args.host, detect=lambda: "54.210.1.2")


def test_head_exports_its_mlflow_server_as_the_tracking_uri_before_ray_starts(capsys):
    """`ray job submit -- python -m orchestrator.sweep NAME --address auto` on the head then tracks into the
    head's server: the driver inherits MLFLOW_TRACKING_URI from the `ray start` that sourced the env file."""
    config = load_cluster()
    head = commands(config, "head_start_ray_commands")
    [export] = [i for i, c in enumerate(head) if "MLFLOW_TRACKING_URI" in c]
    [ray_start] = [i for i, c in enumerate(head) if "ray start" in c]
    [server] = [c for c in head if "deploy.mlflow_server start" in c]
    assert export < ray_start and ". ~/.emotion-sweep.env;" in head[ray_start]  # in ray start's environment
    assert "~/.emotion-sweep.env" in head[export]  # every later shell sources it (initialization_commands)
    uri_argv = shlex.split(head[export].split("python -m deploy.mlflow_server", 1)[1].split(")")[0])
    start_args = mlflow_server.parse_args(shlex.split(server.split("python -m deploy.mlflow_server", 1)[1]))
    uri_args = mlflow_server.parse_args(uri_argv)
    assert (uri_args.command, uri_args.host, uri_args.port) == ("uri", start_args.host, start_args.port)
    mlflow_server.main(["uri", "--host", "127.0.0.1", "--port", str(start_args.port)])
    assert capsys.readouterr().out.strip() == f"http://127.0.0.1:{start_args.port}"


def test_nodes_install_the_pinned_project_with_the_right_torch():
    import ray

    config = load_cluster()
    pins = dict(
        line.split("==")
        for line in (ROOT / "deploy" / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert pins["ray"] == ray.__version__  # the cluster runs the Ray this file was validated with
    head = commands(config, "head_setup_commands")
    workers = commands(config, "worker_setup_commands")
    assert any("torch --index-url https://download.pytorch.org/whl/cpu" in c for c in head)
    assert any(c.endswith("constraints.txt torch") for c in workers)  # PyPI's wheel: the CUDA build
    assert any("torch.cuda.is_available()" in c for c in workers)
    for setup in (head, workers):
        assert any("-c ~/emotion-sweep/deploy/constraints.txt -e ~/emotion-sweep" in c for c in setup)
    assert "torchaudio" not in CLUSTER_YAML.read_text().replace("no torchaudio", "")


# --- cluster.yaml through Ray's own AWS bootstrap, against a mocked AWS ----------------------------


@pytest.fixture
def mocked_aws(monkeypatch, tmp_path):
    """moto's in-process AWS, with Ray's boto caches cleared (they outlive a mock)."""
    moto = pytest.importorskip("moto")
    from ray.autoscaler._private.aws import config as aws_config
    from ray.autoscaler._private.aws import utils as aws_utils

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")  # moto's fake account
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("HOME", str(tmp_path))  # Ray writes the key pair it creates to ~/.ssh
    caches = (aws_utils.resource_cache, aws_utils.client_cache, aws_config._get_subnets_or_die)
    for cache in caches:
        cache.cache_clear()
    with moto.mock_aws():
        yield aws_config
    for cache in caches:
        cache.cache_clear()


def fill_in_network(text: str) -> tuple[dict, str, object]:
    """A VPC, private subnet, the deploy/security_group.sh group and the two instance profiles."""
    import boto3

    ec2 = boto3.client("ec2", region_name="us-east-1")
    iam = boto3.client("iam", region_name="us-east-1")
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(VpcId=vpc, GroupName="emotion-sweep", Description="cluster")["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=group,
        IpPermissions=[
            {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group}]},
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "10.20.0.0/16"}]},
        ],
    )
    for name in ("emotion-sweep-head", "emotion-sweep-worker"):
        iam.create_instance_profile(InstanceProfileName=name)
    filled = text.replace("subnet-EDIT-private", subnet).replace("sg-EDIT-cluster", group)
    return yaml.safe_load(filled), group, ec2


def world_open_rules(ec2) -> list:
    return [
        (g["GroupName"], rule)
        for g in ec2.describe_security_groups()["SecurityGroups"]
        for rule in g["IpPermissions"]
        if any(r["CidrIp"] == "0.0.0.0/0" for r in rule["IpRanges"])
    ]


def test_rays_aws_bootstrap_keeps_our_group_and_opens_nothing(mocked_aws):
    raw, group, ec2 = fill_in_network(CLUSTER_YAML.read_text())
    groups_before = ec2.describe_security_groups()["SecurityGroups"]
    bootstrapped = mocked_aws.bootstrap_aws(prepared_cluster(raw))
    assert {name: t["node_config"]["SecurityGroupIds"] for name, t in bootstrapped["available_node_types"].items()} == {
        name: [group] for name in raw["available_node_types"]
    }
    assert ec2.describe_security_groups()["SecurityGroups"] == groups_before  # no group, no rule added
    assert world_open_rules(ec2) == []
    import boto3

    assert boto3.client("iam", region_name="us-east-1").list_roles()["Roles"] == []  # no default admin role


def test_declared_worker_resources_match_the_instance_types(mocked_aws):
    """What each GPU type tells Ray (CPU, GPU) is what EC2's catalogue (as moto holds it) says."""
    from ray.autoscaler._private.aws.node_provider import AWSNodeProvider

    declared = prepared_cluster()
    blank = copy.deepcopy(declared)
    for name in GPU_NODE_TYPES:
        blank["available_node_types"][name]["resources"] = {}
    detected = AWSNodeProvider.fillout_available_node_types_resources(blank)["available_node_types"]
    for name in GPU_NODE_TYPES:
        ours = declared["available_node_types"][name]["resources"]
        assert {key: detected[name]["resources"][key] for key in ours} == ours, name


def test_without_our_group_ray_would_open_ssh_to_the_world(mocked_aws):
    """The check above can fail: drop SecurityGroupIds and Ray's default group lets in 0.0.0.0/0."""
    raw, _, ec2 = fill_in_network(CLUSTER_YAML.read_text())
    for node_type in raw["available_node_types"].values():
        del node_type["node_config"]["SecurityGroupIds"]
    mocked_aws.bootstrap_aws(prepared_cluster(raw))
    assert [name for name, _ in world_open_rules(ec2)] == ["ray-autoscaler-emotion-sweep"]


# --- deploy/mlflow_server.py ----------------------------------------------------------------------


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "8.8.8.8", "mlflow.example.com"])
def test_mlflow_helper_refuses_wildcard_public_or_named_hosts(address):
    with pytest.raises(SystemExit):
        mlflow_server.resolve_host(address)


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "172.31.0.9", "192.168.7.7"])
def test_mlflow_helper_binds_private_and_loopback_addresses(address):
    this_machine = lambda: {ipaddress.ip_address(address)}  # noqa: E731
    assert mlflow_server.resolve_host(address, local_addresses=this_machine) == address


def test_mlflow_store_backup_restores_on_a_fresh_head(tmp_path):
    db = tmp_path / "head" / "mlflow.db"
    db.parent.mkdir()
    with sqlite3.connect(db) as connection:
        connection.execute("create table runs (run_id text)")
        connection.execute("insert into runs values ('abc')")
    bucket_copy = tmp_path / "bucket" / "mlflow" / "mlflow.db"
    mlflow_server.main(["backup", "--db", str(db), "--to", str(bucket_copy)])
    fresh = tmp_path / "new-head" / "mlflow.db"
    assert mlflow_server.restore_if_missing(fresh, str(bucket_copy))
    with sqlite3.connect(fresh) as connection:
        assert connection.execute("select run_id from runs").fetchall() == [("abc",)]
    assert not mlflow_server.restore_if_missing(fresh, str(bucket_copy))  # never over a live store
    assert not mlflow_server.restore_if_missing(tmp_path / "other.db", str(tmp_path / "no-backup.db"))


# --- a sweep on a local multi-node cluster, tracked over HTTP --------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def tracking_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 (SQLite store and artifacts in tmp), started by the head's helper."""
    port = free_port()
    store, artifacts, log = (
        tmp_path / "server" / "mlflow.db",
        tmp_path / "server" / "artifacts",
        tmp_path / "server.log",
    )
    process = mlflow_server.launch("127.0.0.1", port, store, str(artifacts), num_workers=1, log=log)
    try:
        yield {
            "uri": f"http://127.0.0.1:{port}",
            "store": store,
            "artifacts": artifacts,
            "log": log,
            "process": process,
        }
    finally:
        mlflow_server.stop_process_group(process.pid, process=process)


@pytest.fixture
def ray_temp_dir():
    """A short RAY_TMPDIR (socket paths are capped at 107 bytes) that keeps this cluster's session
    and address file away from /tmp/ray, where other local Rays would find them."""
    path = Path(tempfile.mkdtemp(prefix="es-cluster-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_multinode_sweep(demo_dir: Path, server: dict, tmp_path: Path, ray_tmp: Path) -> tuple[dict, list[dict]]:
    records, out = tmp_path / "records", tmp_path / "result.json"
    records.mkdir()
    token = tmp_path / "ray_auth_token"
    token.write_text(uuid.uuid4().hex)
    env = {
        **os.environ,
        "RAY_TMPDIR": str(ray_tmp),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_AIR_NEW_OUTPUT": "0",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    for inherited in ("RAY_ADDRESS", "RAY_AUTH_TOKEN"):  # this cluster, this token file
        env.pop(inherited, None)
    command = [
        sys.executable,
        str(ROOT / "tests" / "multinode_sweep.py"),
        "--data",
        str(demo_dir),
        "--tracking-uri",
        server["uri"],
        "--storage",
        str(tmp_path / "ray_results"),
        "--records",
        str(records),
        "--out",
        str(out),
    ]
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        cwd=tmp_path,
    )
    try:
        output, _ = process.communicate(timeout=420)  # a hang guard, not a speed target
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        output, _ = process.communicate()
        pytest.fail(f"multi-node sweep hung\n{output[-6000:]}")
    assert process.returncode == 0 and out.exists(), output[-6000:]
    lines = [json.loads(line) for path in sorted(records.glob("*.jsonl")) for line in path.read_text().splitlines()]
    return json.loads(out.read_text()), lines


@pytest.mark.slow
def test_sweep_spreads_over_gpu_nodes_reads_shared_shards_and_tracks_over_http(
    demo_dir, tracking_server, tmp_path, ray_temp_dir
):
    from mlflow.tracking import MlflowClient

    result, records = run_multinode_sweep(demo_dir, tracking_server, tmp_path, ray_temp_dir)
    assert result["exit_code"] == 0

    # trials ran on both fake-GPU worker nodes, never on the CPU-less head
    starts = [r for r in records if r["event"] == "start"]
    assert len(starts) == 2
    assert {r["node_id"] for r in starts} == set(result["gpu_node_ids"])
    assert result["head_node_id"] not in {r["node_id"] for r in records}

    # each trial got only the shard path and memory-mapped every shard from it, in its own process
    manifest = json.loads((demo_dir / "manifest.json").read_text())
    shard_files = {str(demo_dir / entry["path"]) for entry in manifest["shards"]}
    for start in starts:
        assert start["data_dir"] == str(demo_dir) and start["config_bytes"] < 5_000  # no audio aboard
        mapped = {r["path"] for r in records if r["event"] == "memory_map" and r["trial_id"] == start["trial_id"]}
        # The shards; the frozen front end's cache segments (memory-mapped too) live in the feature cache
        assert {path for path in mapped if path.startswith(str(demo_dir))} == shard_files
    assert os.getpid() not in {r["pid"] for r in records}

    # every run reached the HTTP tracking server: its SQLite store and its artifact directory
    client = MlflowClient(tracking_server["uri"])
    experiment = client.get_experiment_by_name("smoke")
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 3 and len(children) == 2
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {c.data.tags["trial_id"] for c in children} == {r["trial_id"] for r in starts}
    for child in children:
        assert "test_en/accuracy" in child.data.metrics and "val/accuracy" in child.data.metrics
        assert child.data.params["data_dir"] == str(demo_dir)
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert "confusion_matrix_test_en.png" in artifacts
    assert len(list(tracking_server["artifacts"].rglob("confusion_matrix_test_en.png"))) == 2
    with sqlite3.connect(tracking_server["store"]) as store:
        assert store.execute("select count(*) from runs").fetchone() == (3,)
