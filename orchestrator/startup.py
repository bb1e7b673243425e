"""The driver's start-up: Ray starting while the driver prepares, and the timeline up to the first trial.

Before, the driver did everything one after the other before a trial could start (2 shared cores,
under load, `python -X importtime` and this module's timeline): imports 3.8 s (mlflow 3.7 s of them),
inputs and preflight 1.5 s, the MLflow store and parent run 3.1 s, then Ray's start 11.9 s. Ray's start
is mostly waiting for its own processes (GCS, raylet, workers), so it now runs on a thread from the
moment the flags are checked, while this process imports mlflow, opens the store and plans the trials;
`orchestrator.tuner.init_ray` waits for it (`wait_for_ray`) before Tune needs Ray.

    start_ray_in_background(address)   after the flags are checked (not for --dry-run)
    wait_for_ray()                      Ray started (the thread's error raised here); a no-op without a thread
    TIMELINE.mark("...")                seconds since the process started, printed at the first trial start
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time

# "thread": the starting thread (kept: it lives on), "done": set once started or failed, "error": what it raised
_START: dict[str, object] = {}


class Timeline:
    """Named points since the process started (its create time, so the interpreter and imports count)."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, float]] = []
        self.printed = False

    @staticmethod
    def now() -> float:
        import psutil

        return time.time() - psutil.Process().create_time()

    def mark(self, name: str) -> None:
        self.marks.append((name, self.now()))

    def line(self) -> str:
        """`driver start-up: a 1.2s, b 3.4s, ...` (each figure: seconds since the process started)."""
        return "driver start-up (s since the process started): " + ", ".join(f"{n} {t:.1f}" for n, t in self.marks)


TIMELINE = Timeline()


def start_ray_in_background(address: str | None) -> None:
    """Start (or connect to) Ray on a daemon thread; `wait_for_ray` waits for it. No-op if one was begun.

    The thread lives as long as the process: Ray's own processes (GCS, raylet) are started with
    PR_SET_PDEATHSIG, which Linux ties to the thread that spawned them, so they would be killed the
    moment a short-lived starting thread returned."""
    if "thread" in _START:
        return
    # ray.init sets this SIGTERM handler only from the main thread (and warns from any other): set it here.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))
    logging.getLogger("ray._private.worker").addFilter(_NoThreadWarning())
    done = threading.Event()

    def start() -> None:
        try:
            connect_ray(address)
            TIMELINE.mark("Ray started")
        except BaseException as error:  # raised again in the main thread by wait_for_ray
            _START["error"] = error
        finally:
            done.set()
        threading.Event().wait()  # never returns: the parent thread of Ray's processes (see above)

    thread = threading.Thread(target=start, name="ray-start", daemon=True)
    _START.update(thread=thread, done=done, address=address)
    TIMELINE.mark("Ray start begun")
    thread.start()


def connect_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    if address is None:  # a local Ray: loopback only, and what a killed predecessor left is stopped
        from orchestrator.local_ray import start_local_ray

        start_local_ray(include_dashboard=False, log_to_driver=False, configure_logging=True, logging_level="WARNING")
        return
    ray.init(
        address=address, include_dashboard=False, log_to_driver=False, configure_logging=True, logging_level="WARNING"
    )


def wait_for_ray() -> None:
    """Wait for the background start, raising what it raised; nothing to do when none was begun."""
    done = _START.get("done")
    if done is None:
        return
    done.wait()
    error = _START.pop("error", None)
    address = _START.pop("address", None)
    _START.pop("done")
    if error is None:
        return
    # Ray gives its raylet 30 s to register (ray/_private/node.py), and the raylet its agent as long: on a
    # loaded machine, the driver's own work beside them can push past that. Once more, with the driver idle.
    import ray

    print(f"Ray's start beside the driver's work failed ({str(error).splitlines()[0]}); starting it again", flush=True)
    ray.shutdown()
    connect_ray(address)
    TIMELINE.mark("Ray started (second try)")


def abandon_ray_start() -> None:
    """The sweep stops before it needs Ray (a usage or preflight error): let the start finish first, so the
    process exits with Ray whole (its atexit shutdown would race a half-started node), its error dropped."""
    done = _START.pop("done", None)
    if done is not None:
        done.wait()
    _START.pop("error", None)


class _NoThreadWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


def print_first_trial_line() -> None:
    """The timeline, once, when Tune starts the first trial (orchestrator.tuner's StartupLine callback)."""
    if TIMELINE.printed or not TIMELINE.marks:
        return
    TIMELINE.printed = True
    TIMELINE.mark("first trial started")
    print(TIMELINE.line(), flush=True)
