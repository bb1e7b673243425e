"""A local sweep's Ray listens on loopback only, and a SIGKILLed driver's Ray is stopped by the next start."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from deploy.bind_address import unwrap
from orchestrator.local_ray import is_alive, records_dir, stamp, stop_leftovers

ROOT = Path(__file__).resolve().parent.parent
DRIVER = [sys.executable, str(ROOT / "tests" / "local_ray_driver.py")]


def wait_for(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


@pytest.fixture(scope="module")
def ray_tmpdir():
    # Short: Ray's unix socket paths live under it (107 bytes at most).
    directory = Path(f"/tmp/rt-{os.getpid()}")
    directory.mkdir(exist_ok=True)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def held_driver(ray_tmpdir):
    """A driver process holding its local Ray, started the way a sweep starts one."""
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmpdir), "PYTHONPATH": str(ROOT)}
    driver = subprocess.Popen(DRIVER + ["hold"], env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    record = Path(driver.stdout.readline().strip())
    yield driver, record, env
    if driver.poll() is None:
        driver.kill()
        driver.wait()
        subprocess.run(DRIVER + ["start"], env=env, cwd=ROOT, capture_output=True, timeout=300)


def listening_sockets(processes: list[psutil.Process]) -> list[tuple[str, str]]:
    sockets = []
    for process in processes:
        try:
            sockets += [
                (process.name(), c.laddr.ip)
                for c in process.net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN
            ]
        except psutil.Error:
            pass
    return sockets


def test_local_ray_listens_on_loopback_only(held_driver):
    driver, _, _ = held_driver
    root = psutil.Process(driver.pid)
    sockets = listening_sockets([root, *root.children(recursive=True)])
    names = {name for name, _ in sockets}
    assert {"gcs_server", "raylet"} <= names, sockets  # the check sees Ray's own servers
    assert any("Agent" in name for name in names), sockets
    exposed = [(name, ip) for name, ip in sockets if not unwrap(ipaddress.ip_address(ip.split("%")[0])).is_loopback]
    assert not exposed, f"listening beyond loopback: {exposed}"


def test_next_start_stops_what_a_sigkilled_driver_left(held_driver):
    driver, record_path, env = held_driver
    below = {p.pid for p in psutil.Process(driver.pid).children(recursive=True)}
    # The record catches up with the worker Ray started after the first write.
    assert wait_for(lambda: below <= {p["pid"] for p in json.loads(record_path.read_text())["processes"]}, 30)
    recorded = json.loads(record_path.read_text())["processes"]
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    time.sleep(2)  # what dies with its driver has gone by now; the agents stay (Ray 2.60)
    left = [p for p in recorded if is_alive(p)]
    assert left, "nothing outlived the killed driver: this test would not see a leftover"
    successor = subprocess.run(DRIVER + ["start"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert successor.returncode == 0, successor.stderr[-2000:]
    assert [p for p in recorded if is_alive(p)] == []
    assert not record_path.exists()
    assert not Path(successor.stdout.strip()).exists()  # the successor's own record went at its clean exit


def test_a_live_drivers_processes_are_left_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        records = records_dir()
        records.mkdir(mode=0o700)
        me = psutil.Process()
        (records / "live.json").write_text(
            json.dumps({"driver": stamp(me), "processes": [stamp(psutil.Process(sleeper.pid))]})
        )
        # A dead driver whose recorded pid was reused: a different start time, so not stopped either.
        reused = {**stamp(psutil.Process(sleeper.pid)), "create_time": 1.0}
        (records / "dead.json").write_text(
            json.dumps({"driver": {"pid": me.pid, "create_time": 2.0}, "processes": [reused]})
        )
        assert stop_leftovers() == []
        assert sleeper.poll() is None
        assert (records / "live.json").exists() and not (records / "dead.json").exists()
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.fixture
def planted(tmp_path, monkeypatch):
    """A record of a dead driver naming a live process (a sleeper), as another user could plant it."""
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    sleeper = subprocess.Popen(["sleep", "60"])
    records = records_dir()
    records.mkdir(mode=0o700)
    record = records / "planted.json"
    record.write_text(
        json.dumps({"driver": {"pid": 1, "create_time": 2.0}, "processes": [stamp(psutil.Process(sleeper.pid))]})
    )
    record.chmod(0o644)
    yield records, record, sleeper
    sleeper.kill()
    sleeper.wait()


def test_a_record_in_a_directory_other_users_can_enter_is_ignored(planted, capsys):
    records, record, sleeper = planted
    records.chmod(0o777)  # e.g. the shared directory of the earlier layout
    assert stop_leftovers(timeout_s=1) == []
    assert sleeper.poll() is None and record.exists()
    assert "mode 777 lets other users in" in capsys.readouterr().err


def test_a_record_other_users_can_write_is_ignored(planted, capsys):
    _, record, sleeper = planted
    record.chmod(0o666)
    assert stop_leftovers(timeout_s=1) == []
    assert sleeper.poll() is None and record.exists()
    assert "lets other users write it" in capsys.readouterr().err


@pytest.mark.skipif(os.getuid() != 0, reason="planting a file of another user needs root")
def test_a_record_another_user_owns_is_ignored(planted, capsys):
    _, record, sleeper = planted
    os.chown(record, 65534, 65534)  # nobody's
    assert stop_leftovers(timeout_s=1) == []
    assert sleeper.poll() is None and record.exists()
    assert "owned by uid 65534" in capsys.readouterr().err


def test_the_records_of_this_user_still_stop_a_dead_drivers_processes(planted):
    _, record, sleeper = planted
    assert stop_leftovers(timeout_s=1) == [sleeper.pid]
    assert wait_for(lambda: sleeper.poll() is not None, 10) and not record.exists()


@pytest.mark.skipif(os.getuid() != 0, reason="starting a process of another user needs root")
def test_a_recorded_process_of_another_user_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    theirs = subprocess.Popen(["sleep", "60"], preexec_fn=lambda: os.setuid(65534))
    try:
        records = records_dir()
        records.mkdir(mode=0o700)
        dead_driver = {"pid": 1, "create_time": 2.0}
        (records / "own.json").write_text(
            json.dumps({"driver": dead_driver, "processes": [stamp(psutil.Process(theirs.pid))]})
        )
        assert stop_leftovers(timeout_s=1) == []
        assert theirs.poll() is None
    finally:
        theirs.kill()
        theirs.wait()
