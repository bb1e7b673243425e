"""deploy/slurm/sweep.sbatch on a real one-node SLURM (munge, slurmctld and slurmd on this machine, their
config and state in a temp dir): `scancel --batch --signal=TERM` stops a running sweep through its Ctrl-C
path (runs KILLED, the resume line), and `--resume` in the next job (`sbatch --wait`) runs it to the end:
one finished MLflow run per trial in the store the head's server wrote, nothing left running. One test, two
jobs: each job starts SLURM's step, Ray and an MLflow server, so a third job would add a minute of CI.

Needs root and Debian's `slurm-wlm` and `munge` packages (.ci/run installs them); skipped without.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SBATCH = ROOT / "deploy" / "slurm" / "sweep.sbatch"
DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "scancel", "sinfo")
# The smoke sweep, small: one schedule, a quarter of its epochs (2 trials), tiny demo corpus.
QUICK = ["--set", "schedule=full", "--set", "epoch_scale=0.25", "--set", "eval_every_steps=5", "--quiet"]
JOB_TIMEOUT_S = 600  # a hang guard, not a speed target


def missing_slurm() -> str:
    missing = [name for name in DAEMONS if shutil.which(name) is None and not Path("/usr/sbin", name).exists()]
    if missing:
        return f"SLURM/munge binaries missing ({', '.join(missing)}): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "starting slurmd needs root"
    return ""


pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(missing_slurm()), reason=missing_slurm() or "n/a")]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for probe in sockets:
            probe.bind(("", 0))
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def slurm_conf(directory: Path, munge_socket: Path) -> str:
    """The least a one-node SLURM needs: this host as controller and only node, munge on our socket."""
    host = socket.gethostname()
    ctld_port, slurmd_port = free_ports(2)
    cpus = os.cpu_count() or 2
    return f"""ClusterName=estest
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
SlurmUser=root
StateSaveLocation={directory}/state
SlurmdSpoolDir={directory}/spool
SlurmctldPidFile={directory}/slurmctld.pid
SlurmdPidFile={directory}/slurmd.pid
SlurmctldLogFile={directory}/slurmctld.log
SlurmdLogFile={directory}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
KillWait=30
NodeName={host} CPUs={cpus} State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""


def stop_pidfile(path: Path) -> None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        for _ in range(50):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """munged, slurmctld and slurmd of our own; yields the environment that points SLURM's commands at them."""
    directory = tmp_path_factory.mktemp("slurm")
    munge = directory / "munge"
    for sub in ("state", "spool", "munge"):
        (directory / sub).mkdir(mode=0o700)
    key, munge_socket = munge / "munge.key", munge / "munge.sock"
    subprocess.run([binary("mungekey"), "--create", "--keyfile", str(key), "--force"], check=True, capture_output=True)
    (directory / "slurm.conf").write_text(slurm_conf(directory, munge_socket))
    env = {**os.environ, "SLURM_CONF": str(directory / "slurm.conf")}
    pidfiles = [directory / "slurmd.pid", directory / "slurmctld.pid", munge / "munged.pid"]
    try:
        subprocess.run(
            [
                binary("munged"),
                "--force",
                f"--key-file={key}",
                f"--socket={munge_socket}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--seed-file={munge / 'seed'}",
                f"--log-file={directory / 'munged.log'}",
            ],
            check=True,
            capture_output=True,
        )
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([binary(daemon), "-f", env["SLURM_CONF"]], env=env, check=True, capture_output=True)
        deadline = time.monotonic() + 60
        while "idle" not in subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True).stdout:
            assert time.monotonic() < deadline, (directory / "slurmctld.log").read_text()[-3000:]
            time.sleep(0.5)
        yield env
    finally:
        subprocess.run(["scancel", "--user", "root"], env=env, capture_output=True)
        deadline = time.monotonic() + 60  # slurmd must outlive its jobs' steps, or they are orphaned
        while time.monotonic() < deadline:
            queue = subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True)
            if queue.returncode != 0 or not queue.stdout.strip():
                break
            time.sleep(1)
        for pidfile in pidfiles:
            stop_pidfile(pidfile)


def job_env(slurm_env: dict, shared: Path) -> dict:
    env = {
        **slurm_env,
        "SWEEP_SHARED": str(shared),
        "EMOTION_SWEEP_PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "RAY_AIR_NEW_OUTPUT": "0",
        # Job ids restart at 1 in every test SLURM: another test run on this machine must not share its ports.
        "SWEEP_PORT_BASE": str(random.randrange(20000, 40000, 16)),
    }
    for inherited in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_TMPDIR"):
        env.pop(inherited, None)
    return env


def sbatch(env: dict, out: Path, *sweep_args: str, wait: bool = True) -> subprocess.Popen:
    command = ["sbatch", "--parsable", f"--cpus-per-task={os.cpu_count() or 2}", f"--output={out}"]
    command += ["--wait"] if wait else []
    return subprocess.Popen([*command, str(SBATCH), *sweep_args], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)


def sweep_runs(shared: Path) -> tuple[object, list]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{shared / 'mlflow' / 'mlflow.db'}")  # the file the head's server wrote
    experiment = client.get_experiment_by_name("smoke")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return (parents[0] if parents else None), children


def leftovers(job_id: str, shared: Path) -> list[str]:
    """Processes of the job still running: its Ray (temp dir /tmp/es-JOBID-PID) or its MLflow server (its store)."""
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline"]):
        text = " ".join(process.info["cmdline"] or [])
        if f"/tmp/es-{job_id}-" in text or str(shared) in text:
            found.append(text[:200])
    return found


def wait_for(condition, timeout_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {timeout_s} s\n{log.read_text()[-4000:] if log.exists() else ''}")
        time.sleep(1)


def test_scancel_stops_the_sweep_through_its_ctrl_c_path_and_the_next_job_resumes(slurm, demo_dir, tmp_path):
    shared, out = tmp_path / "shared", tmp_path / "job.out"
    env = job_env(slurm, shared)
    # 4 epochs (~20 s of training), so the signal lands inside the trial: at 1 epoch (~5 s on the warm
    # front-end cache) the trial once finished before scancel's TERM reached the driver.
    longer = ["--set", "epoch_scale=2.0", "--set", "learning_rate=1e-3"]
    job = sbatch(env, out, "smoke", "--data", str(demo_dir), *QUICK, *longer)
    # Read the store only once the server made it (two processes creating one SQLite store race).
    wait_for(lambda: out.exists() and "MLflow tracking server up" in out.read_text(), 120, "the server", out)
    wait_for(lambda: len(sweep_runs(shared)[1]) >= 1, JOB_TIMEOUT_S, "a trial's run", out)
    job_id = next(
        iter(subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True).stdout.split())
    )
    subprocess.run(["scancel", "--batch", "--signal=TERM", job_id], env=env, check=True)
    job.communicate(timeout=JOB_TIMEOUT_S)
    log = out.read_text()
    assert "interrupting the sweep" in log and "marked KILLED" in log, log[-6000:]
    assert "resume in a new job: sbatch" in log and "deploy/slurm/sweep.sbatch smoke --resume" in log
    parent, [child] = sweep_runs(shared)  # one trial (one learning rate, one schedule)
    assert parent.info.status == child.info.status == "KILLED"
    assert leftovers(job_id, shared) == []

    # A new job, a new head address and port: --tracking-uri (the sbatch passes its own server) moves the record.
    resumed = sbatch(env, tmp_path / "resume.out", "smoke", "--resume", "--quiet")
    resumed_stdout, _ = resumed.communicate(timeout=JOB_TIMEOUT_S)
    assert resumed.returncode == 0, (tmp_path / "resume.out").read_text()[-6000:]
    parent, [resumed_child] = sweep_runs(shared)
    assert parent.info.status == resumed_child.info.status == "FINISHED"
    assert resumed_child.info.run_id == child.info.run_id  # the same run, continued
    assert "test_en/accuracy" in resumed_child.data.metrics
    # A job that runs to its end (`sbatch --wait`) leaves nothing behind: no Ray, no server, no token.
    resumed_log = (tmp_path / "resume.out").read_text()
    assert "Ray: 1 node(s), head " in resumed_log and "MLflow: http://" in resumed_log
    assert list((shared / "ray_results").glob("smoke-*/main/experiment_state-*.json"))
    resumed_id = resumed_stdout.strip().split(";")[0]
    assert leftovers(resumed_id, shared) == [] and not list((shared / "jobs").glob("*.ray-token"))
