"""An ordered map over a process pool in which one poisonous input cannot stop the run.

A file that crashes the decoder itself (a segfault in a C library) kills its worker process and
breaks the pool. The items that were in flight are then retried one at a time in a single-worker
pool, so the culprit is found and reported, and everything after it still runs in parallel.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterator, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def map_ordered(fn: Callable[[Item], Result], items: Sequence[Item], workers: int,
                on_crash: Callable[[Item], Result], chunksize: int = 0) -> Iterator[Result]:
    """fn(item) for every item, in order; an item whose worker died yields on_crash(item)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    chunksize = chunksize or max(1, min(32, len(items) // (workers * 8)))
    done = 0
    while done < len(items):
        try:
            for result in _pool_map(fn, items[done:], workers, chunksize):
                done += 1
                yield result
        except BrokenProcessPool:
            # The pool queues about workers + 1 chunks: the culprit is among the next few.
            suspects = items[done : done + (workers + 2) * chunksize]
            yield from _isolate(fn, suspects, on_crash)
            done += len(suspects)


def _pool(workers: int) -> ProcessPoolExecutor:
    """A started pool, proven able to run work: a pool that cannot start at all must stop the run,
    not have every item blamed for crashing it."""
    # spawn, not fork: the parent holds Arrow thread pools that must not be forked mid-flight.
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        pool.submit(int).result()
    except BrokenProcessPool:
        pool.shutdown(wait=True)
        raise RuntimeError("could not start worker processes (see the error above); try --workers 1") from None
    return pool


def _pool_map(fn, items, workers: int, chunksize: int):
    pool = _pool(workers)
    try:
        yield from pool.map(fn, items, chunksize=chunksize)
    finally:
        # On an interrupt, drop the queued work instead of finishing it.
        pool.shutdown(wait=True, cancel_futures=True)


def _isolate(fn, items, on_crash) -> Iterator:
    pool = _pool(1)
    try:
        for item in items:
            try:
                result = pool.submit(fn, item).result()
            except BrokenProcessPool:
                pool.shutdown(wait=True)
                pool = _pool(1)
                result = on_crash(item)
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
