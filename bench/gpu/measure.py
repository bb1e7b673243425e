"""Measuring helpers: the time budget, device syncs, NVML busy sampling, child processes with a time limit."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

# Shares of the budget (after the data is built); the trial sections rescale their epochs to fit.
SHARES = {"step": 0.1, "compile": 0.2, "evaluation": 0.03, "concurrency": 0.17, "paper_trial": 0.22, "packed": 0.28}


# Child processes still running this long after the budget is spent are ended, so the whole run
# (and its JSON) finishes inside the device's time even when a section overruns its share.
GRACE_S = 30.0
_hard_stop_at = float("inf")  # perf_counter() time; set by stop_children_at()


class Budget:
    def __init__(self, total_s: float):
        self.total_s = total_s
        self.deadline = time.perf_counter() + total_s

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def slot(self, share: float) -> float:
        return max(0.0, min(self.left(), share * self.total_s))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def release(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


class BusySampler:
    """GPU busy fraction from NVML's utilisation counter (share of time a kernel ran), sampled on a thread."""

    def __init__(self, interval_s: float = 0.05):
        self.interval_s = interval_s
        self.samples: list[tuple[float, float]] = []
        self.handle = None
        self.nvml = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self.nvml = pynvml
        except Exception:  # no NVML here (CPU dry run, or nvidia-ml-py missing): busy fraction is null
            self.handle = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            rates = self.nvml.nvmlDeviceGetUtilizationRates(self.handle)
            self.samples.append((time.time(), rates.gpu / 100.0))

    def __enter__(self) -> BusySampler:
        if self.handle is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def fraction(self, start: float, end: float) -> float | None:
        inside = [u for t, u in self.samples if start <= t <= end]
        return float(np.mean(inside)) if inside else None


def run_children(target, args_list: list[tuple], timeout_s: float) -> list[int | None]:
    """Start one spawned process per args tuple, wait up to `timeout_s`, end the ones still running."""
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=target, args=args, daemon=True) for args in args_list]
    for process in processes:
        process.start()
    deadline = min(time.perf_counter() + max(timeout_s, 1.0), _hard_stop_at)
    for process in processes:
        process.join(max(0.0, deadline - time.perf_counter()))
    for process in processes:
        if process.is_alive():
            process.terminate()
            process.join(10)
    return [process.exitcode for process in processes]


def stop_children_at(perf_counter_time: float) -> None:
    """Children still running at this time (the budget's end plus GRACE_S) are ended."""
    global _hard_stop_at
    _hard_stop_at = perf_counter_time


def has_module(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def write_json(path, values: dict) -> None:
    tmp = f"{path}.tmp"
    Path(tmp).write_text(json.dumps(values, indent=1, default=float))
    os.replace(tmp, path)


def read_json(path) -> dict | None:
    return json.loads(Path(path).read_text()) if Path(path).exists() else None
