"""Serialise the creation of a local SQLite MLflow store: a file lock beside it.

Two processes creating the same fresh store at once race in MLflow's schema migration and one
fails (`alembic CommandError: Online migration expected to match one row`), and two sweeps of the
same name race between looking up and creating their experiment. An existing, migrated store takes
concurrent writers fine, so only the first touch of a store (and the experiment's creation) is
held under `<store>.lock`, an `fcntl.flock` lock: released by the kernel if its holder dies.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SQLITE_PREFIX = "sqlite:///"


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a local SQLite tracking URI; None for servers and other stores."""
    return Path(tracking_uri.removeprefix(SQLITE_PREFIX)) if tracking_uri.startswith(SQLITE_PREFIX) else None


@contextmanager
def store_lock(tracking_uri: str) -> Iterator[None]:
    """Hold the store's lock (a no-op for anything but a local SQLite store)."""
    database = sqlite_path(tracking_uri)
    if database is None:
        yield
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
