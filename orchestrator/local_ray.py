"""The sweep's own local Ray (no --address): every socket on loopback, nothing left behind by a killed driver.

Loopback: `ray.init(_node_ip_address="127.0.0.1")` alone does not do it; Ray 2.60 turns a loopback
node address back into the machine's address (`services.resolve_ip_for_localhost`), and GCS, raylet,
workers, the dashboard agent and its Prometheus metrics endpoint then listen on every interface.
Ray keeps a local-only mode for macOS and Windows (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`): the node
address stays 127.0.0.1, and every component then binds loopback (C++ gRPC servers, the agents'
gRPC, HTTP and metrics servers: they test `is_localhost(node_ip)`). The variable must be in the
environment of every Ray process, so it is set before `ray.init` spawns them.

Leftovers: a SIGKILLed driver never runs Ray's shutdown, and its dashboard and runtime-env agents
keep running. The driver records the process id and start time of every process below it in
`$RAY_TMPDIR/emotion-sweep-drivers/<pid>.json` (refreshed while it runs, as Ray starts workers);
the next local start stops, for every record whose driver is gone, the recorded processes that
still have the same pid and start time (never by name: a reused pid is somebody else's).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import tempfile
import threading
from pathlib import Path

import psutil

LOOPBACK = "127.0.0.1"
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
REFRESH_EVERY_S = 2.0


def start_local_ray(**init_kwargs) -> Path:
    """Stop what dead drivers left, start a loopback-only Ray, and record its processes; returns the record."""
    import ray

    stop_leftovers()
    bind_to_loopback()
    ray.init(_node_ip_address=LOOPBACK, **init_kwargs)
    return keep_record()


def bind_to_loopback() -> None:
    import ray._private.ray_constants as ray_constants

    os.environ[LOCAL_ONLY_ENV] = "0"  # for the processes ray.init spawns
    ray_constants.ENABLE_RAY_CLUSTER = False  # read at import: this process imported ray already


def records_dir() -> Path:
    return Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "emotion-sweep-drivers"


def stamp(process: psutil.Process) -> dict:
    """What identifies a process across pid reuse: its pid and its start time."""
    return {"pid": process.pid, "create_time": process.create_time()}


def is_alive(recorded: dict) -> bool:
    try:
        process = psutil.Process(recorded["pid"])
        return process.create_time() == recorded["create_time"] and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def write_record(path: Path) -> None:
    me = psutil.Process()
    record = {"driver": stamp(me), "processes": [stamp(p) for p in _descendants(me)]}
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(record))
    temporary.replace(path)


def keep_record() -> Path:
    """Record this driver's Ray processes now and every REFRESH_EVERY_S; the record goes at a clean exit."""
    path = records_dir() / f"{os.getpid()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_record(path)
    stopped = threading.Event()

    def refresh() -> None:
        while not stopped.wait(REFRESH_EVERY_S):
            try:
                write_record(path)
            except (OSError, psutil.Error):
                pass

    threading.Thread(target=refresh, name="local-ray-record", daemon=True).start()

    def forget() -> None:
        stopped.set()
        path.unlink(missing_ok=True)

    atexit.register(forget)
    return path


def stop_leftovers(timeout_s: float = 5.0) -> list[int]:
    """Stop the recorded processes of every driver that is gone; returns the pids stopped."""
    stopped: list[int] = []
    for path in sorted(records_dir().glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being written, or torn: the next start sees it again
        if is_alive(record["driver"]):
            continue  # another sweep's Ray, still in use
        stopped += stop_recorded(record["processes"], timeout_s)
        path.unlink(missing_ok=True)
    return stopped


def stop_recorded(processes: list[dict], timeout_s: float) -> list[int]:
    """SIGTERM the recorded processes that are still the same processes; SIGKILL what is left after timeout_s.

    (Ray 2.60's orphaned agents ignored SIGTERM here: the SIGKILL is what ends them.)
    """
    targets = []
    for recorded in processes:
        if is_alive(recorded):
            try:
                process = psutil.Process(recorded["pid"])
                process.send_signal(signal.SIGTERM)
                targets.append(process)
            except psutil.Error:
                pass
    _, alive = psutil.wait_procs(targets, timeout=timeout_s)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=timeout_s)
    return [p.pid for p in targets]


def _descendants(process: psutil.Process) -> list[psutil.Process]:
    found = []
    for child in process.children(recursive=True):
        try:
            child.create_time()
            found.append(child)
        except psutil.Error:
            pass
    return found
