"""The sweep's MLflow tracking server on the Ray head node, bound to a private address only.

    python -m deploy.mlflow_server start --db ~/mlflow/mlflow.db \\
        --artifacts s3://BUCKET/mlflow/artifacts --backup s3://BUCKET/mlflow/mlflow.db
    python -m deploy.mlflow_server backup --db ~/mlflow/mlflow.db --to s3://BUCKET/mlflow/mlflow.db
    python -m deploy.mlflow_server stop
    python -m deploy.mlflow_server uri     # http://<this node's private ip>:5000, for MLFLOW_TRACKING_URI

Trials log over HTTP to http://<head private ip>:5000. Artifacts travel through the server to
`--artifacts` (the bucket), so only the head needs bucket rights for MLflow. The SQLite file stays on
the head's own disk (SQLite needs file locks that NFS/EFS does not reliably give); `backup` copies a
consistent snapshot to the bucket (cluster.yaml runs it from cron) and `start` restores that snapshot
on a fresh head, so losing the head loses at most the minutes since the last backup.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

from deploy.bind_address import interface_addresses, refusal

STATE_DIR = Path.home() / ".emotion-sweep"
DEFAULT_PIDFILE = STATE_DIR / "mlflow-server.pid"
DEFAULT_LOG = STATE_DIR / "mlflow-server.log"


def node_ip() -> str:
    """This node's address on the cluster network (the one Ray advertises)."""
    import ray.util

    return ray.util.get_node_ip_address()


def resolve_host(
    host: str, detect: Callable[[], str] = node_ip, local_addresses: Callable[[], Iterable] = interface_addresses
) -> str:
    """The address to bind: loopback or a private address of this machine, never a wildcard or a public one."""
    address = detect() if host == "auto" else host
    if (reason := refusal(address, local_addresses)) is not None:
        raise SystemExit(
            f"refusing to bind MLflow to {address}: {reason} (allowed: loopback, or this node's private IP)"
        )
    return address


def as_uri(location: str) -> str:
    """s3://... and file://... pass through; a local path becomes an absolute file:// URI."""
    return location if "://" in location else Path(location).expanduser().resolve().as_uri()


def server_command(host: str, port: int, db: Path, artifacts: str, num_workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{db}",  # db is absolute: four slashes in all
        "--artifacts-destination",
        as_uri(artifacts),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(num_workers),
        # The Host header clients send: MLflow's default list (localhost, 10/8, 172.16/12, 192.168/16)
        # refuses other private ranges with 403 "Invalid Host header"; the server answers on `host` only.
        "--allowed-hosts",
        f"{host},{host}:{port}",
    ]


def launch(
    host: str, port: int, db: Path, artifacts: str, num_workers: int = 2, log: Path = DEFAULT_LOG
) -> subprocess.Popen:
    """Start the server in its own session (it outlives the ssh session of `ray up`); returns at once."""
    db = db.expanduser().resolve()
    db.parent.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    # The job runner serves MLflow's GenAI jobs, which sweeps never use; it costs seven processes.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log, "ab") as log_file:
        return subprocess.Popen(
            server_command(host, port, db, artifacts, num_workers),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_healthy(
    url: str, timeout_s: float = 120.0, process: subprocess.Popen | None = None, log: Path | None = None
) -> None:
    """Poll `url`/health until it answers OK; fail early if the server process died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"mlflow server exited with code {process.returncode}\n{tail}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"mlflow server at {url} not healthy after {timeout_s:.0f} s")


def is_mlflow_server(pid: int) -> bool:
    """Guards `stop` against a stale pidfile whose pid now belongs to something else."""
    try:
        return b"mlflow" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def stop_process_group(pid: int, timeout_s: float = 15.0, process: subprocess.Popen | None = None) -> None:
    """SIGTERM the server's session (uvicorn workers included), SIGKILL what is left after timeout_s.

    `process`: the Popen when the caller started the server, so its exit is reaped here.
    """
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None:
            process.poll()
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def copy_file(source: str, destination: str) -> None:
    """Copy one file between local paths and buckets (pyarrow's S3 uses the instance profile)."""
    from pyarrow import fs

    source_fs, source_path = fs.FileSystem.from_uri(as_uri(source))
    destination_fs, destination_path = fs.FileSystem.from_uri(as_uri(destination))
    if isinstance(destination_fs, fs.LocalFileSystem):
        destination_fs.create_dir(str(Path(destination_path).parent), recursive=True)
    fs.copy_files(source_path, destination_path, source_filesystem=source_fs, destination_filesystem=destination_fs)


def file_exists(location: str) -> bool:
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(as_uri(location))
    return filesystem.get_file_info(path).type != fs.FileType.NotFound


def backup(db: Path, destination: str) -> None:
    """A consistent snapshot of a live SQLite store (sqlite3's online backup), copied to destination."""
    with tempfile.TemporaryDirectory() as scratch:
        snapshot = Path(scratch) / "mlflow.db"
        source = sqlite3.connect(f"file:{db.expanduser()}?mode=ro", uri=True)
        target = sqlite3.connect(snapshot)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
        copy_file(str(snapshot), destination)


def restore_if_missing(db: Path, backup_location: str | None) -> bool:
    """On a fresh head, bring back the last snapshot; never overwrite a store that exists."""
    db = db.expanduser()
    if db.exists() or not backup_location or not file_exists(backup_location):
        return False
    copy_file(backup_location, str(db))
    return True


def start(args: argparse.Namespace) -> int:
    host = resolve_host(args.host)
    stop(args)  # `ray up` reruns the head's start commands: restart rather than collide on the port
    if restore_if_missing(args.db, args.backup):
        print(f"restored {args.db} from {args.backup}")
    process = launch(host, args.port, args.db, args.artifacts, args.workers, args.log)
    args.pidfile.parent.mkdir(parents=True, exist_ok=True)
    args.pidfile.write_text(str(process.pid))
    url = f"http://{host}:{args.port}"
    wait_healthy(url, args.timeout, process, args.log)
    print(f"MLflow tracking server up: {url} (store {args.db}, artifacts {args.artifacts}, log {args.log})")
    return 0


def stop(args: argparse.Namespace) -> int:
    if args.pidfile.exists():
        pid = int(args.pidfile.read_text().strip())
        if is_mlflow_server(pid):
            stop_process_group(pid)
        args.pidfile.unlink()
    return 0


def print_uri(args: argparse.Namespace) -> int:
    """The URL `start` serves (with the same --host and --port): what the head exports as MLFLOW_TRACKING_URI."""
    print(f"http://{resolve_host(args.host)}:{args.port}")
    return 0


def run_backup(args: argparse.Namespace) -> int:
    backup(args.db, args.to)
    print(f"backed up {args.db} to {args.to}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.mlflow_server",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start_parser = commands.add_parser("start", help="start (or restart) the server and wait until it is healthy")
    start_parser.add_argument(
        "--db", type=Path, required=True, help="SQLite file of the tracking store (head's local disk)"
    )
    start_parser.add_argument(
        "--artifacts", required=True, help="where artifacts go: s3://bucket/prefix or a local dir"
    )
    start_parser.add_argument("--backup", default=None, help="snapshot to restore when --db does not exist yet")
    start_parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    start_parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for /health")
    start_parser.add_argument("--log", type=Path, default=DEFAULT_LOG)
    backup_parser = commands.add_parser("backup", help="copy a consistent snapshot of the store to a bucket or path")
    backup_parser.add_argument("--db", type=Path, required=True)
    backup_parser.add_argument("--to", required=True, help="s3://bucket/key or a local path")
    commands.add_parser("stop", help="stop the server started by `start`")
    uri_parser = commands.add_parser("uri", help="print the URL `start` serves (for MLFLOW_TRACKING_URI)")
    for sub in (start_parser, uri_parser):
        sub.add_argument(
            "--host", default="auto", help="private or loopback IP to bind; 'auto': this node's cluster IP"
        )
        sub.add_argument("--port", type=int, default=5000)
    for sub in (start_parser, commands.choices["stop"]):
        sub.add_argument("--pidfile", type=Path, default=DEFAULT_PIDFILE)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return {"start": start, "stop": stop, "backup": run_backup, "uri": print_uri}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
