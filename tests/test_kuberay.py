"""deploy/kuberay/rayjob.yaml: the RayJob against KubeRay's own CRD schema (a fixture, strict: unknown fields
fail as `kubectl apply --validate=strict` fails them), the other documents structurally, and the wiring
between them (the sweep it runs, its tracking server, its volumes)."""

from __future__ import annotations

import copy
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RAYJOB_YAML = ROOT / "deploy" / "kuberay" / "rayjob.yaml"
SCHEMA = Path(__file__).parent / "fixtures" / "kuberay_rayjob_v1_schema.yaml"
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@pytest.fixture(scope="module")
def schema() -> dict:
    return strict(yaml.load(SCHEMA.read_text(), Loader=LOADER))


def documents() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all(RAYJOB_YAML.read_text()) if d]
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    return {kind: found[0] if len(found) == 1 else found for kind, found in by_kind.items()}


def strict(node):
    """The schema with `additionalProperties: false` on every object that lists its properties and does not keep
    unknown fields: the API server's strict field validation (a misspelt key is an error, not silently pruned)."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict(value) for key, value in node.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def validation_errors(schema: dict, document: dict) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_the_rayjob_is_valid_against_kuberays_crd_schema(schema):
    assert validation_errors(schema, documents()["RayJob"]) == []


@pytest.mark.parametrize(
    "break_it",
    [
        lambda job: job["spec"]["rayClusterSpec"].update(workerGroupSpec=[]),  # misspelt key
        lambda job: job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].update(maxReplicas="eight"),
        lambda job: job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0].pop("name"),
        lambda job: job["spec"]["rayClusterSpec"]["authOptions"].update(mode="password"),
        lambda job: job["spec"].update(shutdownAfterJobFinishes="yes"),
    ],
    ids=["unknown-field", "replicas-type", "container-name", "auth-mode", "boolean"],
)
def test_the_schema_check_can_fail(schema, break_it):
    job = copy.deepcopy(documents()["RayJob"])
    break_it(job)
    assert validation_errors(schema, job)


def test_the_other_documents_are_well_formed_kubernetes_objects():
    docs = [d for d in yaml.safe_load_all(RAYJOB_YAML.read_text()) if d]
    kinds = {(d["apiVersion"], d["kind"]) for d in docs}
    assert kinds == {
        ("v1", "PersistentVolumeClaim"),
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
        ("ray.io/v1", "RayJob"),
    }
    for doc in docs:
        assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}, doc["kind"]
        name = doc["metadata"]["name"]
        assert name.replace("-", "").isalnum() and name == name.lower() and len(name) <= 63
    for claim in documents()["PersistentVolumeClaim"]:
        assert set(claim["spec"]["accessModes"]) <= {"ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany"}
        assert claim["spec"]["resources"]["requests"]["storage"].endswith("Gi")
    deployment, service = documents()["Deployment"], documents()["Service"]
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    [container] = pod["spec"]["containers"]
    assert container["name"] and container["image"] and container["command"][:2] == ["mlflow", "server"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    [port] = service["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["port"] == port["targetPort"]
    mounted = {v["name"] for v in pod["spec"]["volumes"]} >= {m["name"] for m in container["volumeMounts"]}
    assert mounted
    policy = documents()["NetworkPolicy"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()


def rayjob_pods(job: dict) -> list[dict]:
    cluster = job["spec"]["rayClusterSpec"]
    return [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]


def test_the_rayjob_runs_a_named_sweep_on_the_cluster_into_the_mlflow_service():
    import search_spaces
    from orchestrator import sweep

    job, service, deployment = documents()["RayJob"], documents()["Service"], documents()["Deployment"]
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "orchestrator.sweep"]
    args = sweep.parse_args(argv[3:])  # the entrypoint parses with the driver's own CLI
    assert args.name in search_spaces.available() and args.address == "auto"
    assert args.tracking_uri is None and args.storage.startswith("/data/")  # the head's env, the shared PVC
    assert "runtimeEnvYAML" not in job["spec"]  # the project is installed in the image; no working_dir
    server = f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    head_env = {e["name"]: e["value"] for e in rayjob_pods(job)[0]["spec"]["containers"][0]["env"]}
    assert head_env["MLFLOW_TRACKING_URI"] == server
    allowed = next(
        a for a in deployment["spec"]["template"]["spec"]["containers"][0]["command"] if "allowed-hosts" in a
    )
    assert server.removeprefix("http://") in allowed.split("=", 1)[1].split(",")


def test_the_rayjob_has_a_cpu_head_gpu_workers_and_the_shared_volume():
    import ray

    job = documents()["RayJob"]
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    [gpu] = cluster["workerGroupSpecs"]
    [worker] = gpu["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] >= 1 and gpu["minReplicas"] == 0
    claims = {c["metadata"]["name"]: c for c in documents()["PersistentVolumeClaim"]}
    for pod in rayjob_pods(job):
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        [container] = pod["spec"]["containers"]
        [data] = [m for m in container["volumeMounts"] if m["mountPath"] == "/data"]
        claim = volumes[data["name"]]["persistentVolumeClaim"]["claimName"]
        assert claims[claim]["spec"]["accessModes"] == ["ReadWriteMany"]  # every pod reads shards, writes state
    assert job["spec"]["shutdownAfterJobFinishes"] is True
