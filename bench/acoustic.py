"""Acoustic-feature extraction speed: openSMILE functionals per second, one process against every core.

Both are measured in this run on the same demo clips, so the ratio holds on a loaded machine. The
every-core run goes through the trial's path (extract, then store the table); reading the stored
table back, what every later trial on the node does, is timed too.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time

import numpy as np

from shards.schema import SAMPLE_RATE
from workers.acoustic.extract import DEFAULT_FEATURE_SET, extract, load_or_extract


def extraction_speed(args) -> None:
    from orchestrator.paths import ensure_demo_corpus
    from shards.reader import open_reader

    reader = open_reader(ensure_demo_corpus(0, log=lambda *_: None))
    audio_seconds = float(np.sum(reader.index.num_samples)) / SAMPLE_RATE
    cores = os.cpu_count() or 1
    feature_set = DEFAULT_FEATURE_SET
    print(f"{feature_set} functionals of {len(reader)} demo clips ({audio_seconds:.0f} s of audio), {cores} cores")

    cpu_before = _cpu_seconds()
    started = time.perf_counter()
    extract(reader, feature_set, num_workers=1)
    one = time.perf_counter() - started
    one_cpu = _cpu_seconds() - cpu_before
    with tempfile.TemporaryDirectory() as table_dir:
        cpu_before = _cpu_seconds()
        started = time.perf_counter()
        load_or_extract(reader.data_dir, feature_set, table_dir, num_workers=cores)
        every = time.perf_counter() - started
        every_cpu = _cpu_seconds() - cpu_before
        started = time.perf_counter()
        _, status = load_or_extract(reader.data_dir, feature_set, table_dir)
        read_back = time.perf_counter() - started
    # Clips per CPU-second does not depend on how busy the machine is; wall-clock clips/s does.
    for label, seconds, cpu in (("1 process", one, one_cpu), (f"{cores} processes + store", every, every_cpu)):
        print(
            f"  {label:22s} {len(reader) / seconds:7.1f} clips/s wall ({audio_seconds / seconds:6.1f} s of audio "
            f"per s), {len(reader) / cpu:6.1f} clips per CPU-second"
        )
    print(f"  every core / one process: x{one / every:.2f}")
    print(f"  stored table read back ({status}): {read_back * 1000:.1f} ms")


def _cpu_seconds() -> float:
    """User + system time of this process and of its finished children (the extraction pool)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
