"""An ordered map over a process pool in which one poisonous input cannot stop the run.

Work goes out in chunks, at most a few per worker ahead of the consumer, so results never pile up
in memory faster than they are written. A file that crashes the decoder itself (a segfault in a C
library) kills its worker process and breaks the pool; the items that were in flight are then
retried one at a time in a single-worker pool, so the culprit is found and reported, and the rest
of the run goes on in parallel.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
CHUNKS_AHEAD_PER_WORKER = 4


def map_ordered(
    fn: Callable[[Item], Result],
    items: Sequence[Item],
    workers: int,
    on_crash: Callable[[Item], Result],
    chunksize: int = 0,
) -> Iterator[Result]:
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
            suspects = items[done : done + workers * CHUNKS_AHEAD_PER_WORKER * chunksize]
            yield from _isolate(fn, suspects, on_crash)
            done += len(suspects)


def _run_chunk(fn: Callable[[Item], Result], chunk: Sequence[Item]) -> list[Result]:
    return [fn(item) for item in chunk]


def _pool_map(fn, items: Sequence, workers: int, chunksize: int) -> Iterator:
    pool = _pool(workers)
    pending: deque[Future] = deque()
    starts = iter(range(0, len(items), chunksize))
    try:
        while True:
            while len(pending) < workers * CHUNKS_AHEAD_PER_WORKER:
                start = next(starts, None)
                if start is None:
                    break
                pending.append(pool.submit(_run_chunk, fn, items[start : start + chunksize]))
            if not pending:
                return
            yield from pending.popleft().result()
    finally:
        # On an interrupt, drop the queued work instead of finishing it.
        pool.shutdown(wait=True, cancel_futures=True)


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


def _isolate(fn, items: Sequence, on_crash) -> Iterator:
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
