"""Named phases of a trial, observable from outside: the seam benchmarks and profilers measure through.

    with phase(Phase.TRAIN_STEP, batches=micro_batches):
        loss = train_step(...)

A recipe wraps its phases (setup, data waits, optimizer steps, evaluation rounds, the final
evaluation, the feature cache, checkpoints, logging) in `phase`. Nothing happens unless someone
looks: with no observer registered and no torch profiler running, `phase` returns one shared
no-op context (a dict lookup and a call: well under a microsecond, against milliseconds a step).

    with observe(clock, expect=(Phase.SETUP, Phase.TRAIN_STEP)):
        run_trial(...)

`observe` registers an observer (its `enter(name, info)` and `exit(name, info)` run around every
phase, on the thread the phase runs on) and, when the block ends, raises `PhaseNotEntered` naming
every expected phase the code never entered: a renamed or removed phase fails the measurement
instead of silently reading 0. An expected name that is no phase at all is refused at once.
While a torch profiler records, every phase is also a `record_function` region of its trace.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Protocol


class Phase(StrEnum):
    """Every phase a trial can enter (a StrEnum: each member is its own name as a string)."""

    SETUP = "setup"  # data, model, params and tags: recipe.setup
    DATA_WAIT = "data_wait"  # waiting for the next collated training batch (prefetched on a thread)
    TRAIN_STEP = "train_step"  # forward, backward, clipping, optimizer step; info: batches (the micro-batches)
    EVALUATION_ROUND = "evaluation_round"  # val loss every eval_every_steps, adaptive lr, early stopping
    PREDICT = "predict"  # one pass of the model over a set's rows; info: source, rows
    FEATURE_CACHE = "feature_cache"  # a head-only stage's frozen-encoder features, from the cache or computed
    FEATURE_PASS = "feature_pass"  # the encoder's pass that computes them (a cache miss); info: source, rows
    FRONTEND_CACHE = "frontend_cache"  # a stage's frozen conv front end, from its cache (missing clips computed)
    FINISH = "finish"  # from the end of training: best model restored, final evaluation, model saved
    FINAL_EVALUATION = "final_evaluation"  # every evaluation set, metrics, reports and figures
    FIGURES = "figures"  # building a matplotlib figure (confusion matrix, reliability diagram)
    CHECKPOINT = "checkpoint"  # a model written and handed to the reporter (Tune copies it)
    LOGGING = "logging"  # one tracking call (in line, or on the writer thread); info: call (the method)
    LOGGING_WAIT = "logging_wait"  # waiting for the background writer to drain


class PhaseObserver(Protocol):
    """Called around every phase, on the thread that runs it (the MLflow writer thread included)."""

    def enter(self, name: Phase, info: dict) -> None: ...

    def exit(self, name: Phase, info: dict) -> None: ...


class PhaseNotEntered(RuntimeError):
    """A phase an observer expected was never entered: its measurement would read 0."""

    def __init__(self, missing: list[Phase]):
        self.missing = missing
        super().__init__(
            f"phase(s) {', '.join(repr(str(m)) for m in missing)} never entered: the recipe no longer "
            "wraps them (renamed or removed?), so a measurement of them would read 0"
        )


class Observation:
    """One registration: the observer (or none) and how often each phase was entered while it was registered."""

    def __init__(self, observer: PhaseObserver | None):
        self.observer = observer
        self.counts: Counter[Phase] = Counter()
        self._lock = threading.Lock()

    def enter(self, name: Phase, info: dict) -> None:
        with self._lock:
            self.counts[name] += 1
        if self.observer is not None:
            self.observer.enter(name, info)

    def exit(self, name: Phase, info: dict) -> None:
        if self.observer is not None:
            self.observer.exit(name, info)


_observations: tuple[Observation, ...] = ()  # replaced, never mutated: a phase iterates a stable tuple
_registry_lock = threading.Lock()


@contextmanager
def observe(observer: PhaseObserver | None = None, expect: Iterable[str] = ()) -> Iterator[Observation]:
    """Register `observer` for the block; at its end raise PhaseNotEntered for any `expect`ed phase not entered."""
    global _observations
    expect = list(expect)
    unknown = [name for name in expect if name not in {p.value for p in Phase}]
    if unknown:
        raise ValueError(f"no phase named {unknown}; the phases are {[str(p) for p in Phase]}")
    observation = Observation(observer)
    with _registry_lock:
        _observations = (*_observations, observation)
    try:
        yield observation
    finally:
        with _registry_lock:
            _observations = tuple(o for o in _observations if o is not observation)
    missing = [Phase(name) for name in expect if observation.counts[name] == 0]
    if missing:
        raise PhaseNotEntered(missing)


class _Region:
    """An observed phase: the observers around it, and a profiler region while torch's profiler records."""

    __slots__ = ("name", "info", "observations", "record")

    def __init__(self, name: Phase, info: dict, observations: tuple[Observation, ...]):
        self.name, self.info, self.observations, self.record = name, info, observations, None

    def __enter__(self) -> None:
        if _profiling():
            import torch

            self.record = torch.profiler.record_function(str(self.name))
            self.record.__enter__()
        for observation in self.observations:
            observation.enter(self.name, self.info)

    def __exit__(self, *exc) -> None:
        for observation in reversed(self.observations):
            observation.exit(self.name, self.info)
        if self.record is not None:
            self.record.__exit__(*exc)


class _Unobserved:
    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        return None


_UNOBSERVED = _Unobserved()


def _profiling() -> bool:
    torch = sys.modules.get("torch")  # not imported: no profiler can be recording
    return torch is not None and torch.autograd._profiler_enabled()


def phase(name: Phase, **info) -> _Region | _Unobserved:
    """A context around one phase; `info` (objects, not copies) goes to the observers as it is."""
    if _observations or _profiling():
        return _Region(name, info, _observations)
    return _UNOBSERVED


def phased(name: Phase) -> Callable[[Callable], Callable]:
    """Decorator: every call of the function is a phase `name` (for helpers whose callers are many)."""

    def decorate(function: Callable) -> Callable:
        @functools.wraps(function)
        def in_phase(*args, **kwargs):
            with phase(name):
                return function(*args, **kwargs)

        return in_phase

    return decorate


def waits(name: Phase, items: Iterable) -> Iterator:
    """`items` as they come, each wait for the next one a phase `name` (the caller closes `items`)."""
    iterator = iter(items)
    while True:
        with phase(name):
            item = next(iterator, _END)
        if item is _END:
            return
        yield item


_END = object()


class ObservedCalls:
    """An object whose every method call is a phase `name` with info `call` (the method's name):
    the tracking logger, so logging is a phase wherever the recipe logs."""

    def __init__(self, inner, name: Phase):
        self._inner = inner
        self._name = name

    def __getattr__(self, attribute: str):
        value = getattr(self._inner, attribute)
        if not callable(value):
            return value

        @functools.wraps(value)
        def in_phase(*args, **kwargs):
            with phase(self._name, call=attribute):
                return value(*args, **kwargs)

        return in_phase
