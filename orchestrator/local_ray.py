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
`$RAY_TMPDIR/emotion-sweep-drivers-<uid>/<pid>.json` (refreshed while it runs, as Ray starts workers);
the next local start stops, for every record whose driver is gone, the recorded processes that
still have the same pid and start time (never by name: a reused pid is somebody else's).
On a shared host /tmp is everybody's: the records live in a directory of the user's own (0700), and a
directory or record that another user owns or could write, or a recorded process of another user,
is ignored (with a line on stderr), so nobody can plant a record that makes a sweep stop their pid.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import stat
import sys
import tempfile
import threading
from pathlib import Path

import psutil

LOOPBACK = "127.0.0.1"
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
PRESTART_ENV = "RAY_prestart_worker_first_driver"  # the raylet's config, read from its environment
REFRESH_EVERY_S = 2.0


def start_local_ray(**init_kwargs) -> Path | None:
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
    # The raylet starts one idle worker per CPU for the first driver, with no runtime environment. Tune
    # starts every trial actor with one (its env_vars: ray/tune/execution/class_cache.py), so no trial ever
    # runs in them (checked by pid), and the sweep does not call Ray tasks: they only took ~0.5 s of CPU
    # each from the driver's start-up on a 2-core machine.
    os.environ.setdefault(PRESTART_ENV, "0")


def records_dir() -> Path:
    """This user's directory of driver records, under $RAY_TMPDIR or the system's temporary directory."""
    return Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / f"emotion-sweep-drivers-{os.getuid()}"


def trusted_records_dir(create: bool) -> Path | None:
    """records_dir() when it is this user's own and private (created 0700 when `create`), else None."""
    directory = records_dir()
    if create:
        directory.parent.mkdir(parents=True, exist_ok=True)
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            pass
    elif not os.path.lexists(directory):
        return None
    problem = untrusted(directory, private=True)
    if problem:
        print(f"local Ray: ignoring the driver records in {directory}: {problem}", file=sys.stderr, flush=True)
        return None
    return directory


def untrusted(path: Path, private: bool) -> str | None:
    """Why `path` cannot be trusted (None: it can): not this user's, a link, or open to others.

    `private`: nobody else may even read it (the records directory); else nobody else may write it."""
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        return "it is a symbolic link"
    if info.st_uid != os.getuid():
        return f"it is owned by uid {info.st_uid}, not by this user ({os.getuid()})"
    if info.st_mode & (0o077 if private else 0o022):
        return f"its mode {stat.S_IMODE(info.st_mode):o} lets other users {'in' if private else 'write it'}"
    return None


def stamp(process: psutil.Process) -> dict:
    """What identifies a process across pid reuse: its pid and its start time."""
    return {"pid": process.pid, "create_time": process.create_time()}


def is_alive(recorded: dict) -> bool:
    try:
        process = psutil.Process(recorded["pid"])
        return process.create_time() == recorded["create_time"] and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def is_mine(process: psutil.Process) -> bool:
    """Whether the process runs as this user (a sweep only ever stops its own user's processes)."""
    try:
        return process.uids().real == os.getuid()
    except psutil.Error:
        return False


def write_record(path: Path) -> None:
    me = psutil.Process()
    record = {"driver": stamp(me), "processes": [stamp(p) for p in _descendants(me)]}
    temporary = path.with_suffix(".tmp")
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
        file.write(json.dumps(record))
    temporary.replace(path)


def keep_record() -> Path | None:
    """Record this driver's Ray processes now and every REFRESH_EVERY_S; the record goes at a clean exit.

    None: the records directory is not this user's private one (nothing recorded)."""
    directory = trusted_records_dir(create=True)
    if directory is None:
        return None
    path = directory / f"{os.getpid()}.json"
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
    directory = trusted_records_dir(create=False)
    for path in sorted(directory.glob("*.json")) if directory else []:
        try:
            problem = untrusted(path, private=False)
            if problem:
                print(f"local Ray: ignoring the driver record {path}: {problem}", file=sys.stderr, flush=True)
                continue
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being written, or torn: the next start sees it again
        if is_alive(record["driver"]):
            continue  # another sweep's Ray, still in use
        stopped += stop_recorded(record["processes"], timeout_s)
        path.unlink(missing_ok=True)
    return stopped


def stop_recorded(processes: list[dict], timeout_s: float) -> list[int]:
    """SIGTERM the recorded processes that are still the same processes, and this user's; SIGKILL what is
    left after timeout_s.

    (Ray 2.60's orphaned agents ignored SIGTERM here: the SIGKILL is what ends them.)
    """
    targets = []
    for recorded in processes:
        if is_alive(recorded):
            try:
                process = psutil.Process(recorded["pid"])
                if not is_mine(process):
                    continue
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
