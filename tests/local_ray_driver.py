"""A driver that starts its local Ray as a sweep does (orchestrator.tuner.init_ray), for tests/test_local_ray.py.

python tests/local_ray_driver.py hold   # start, run one task, print the record path, wait to be killed
python tests/local_ray_driver.py start  # start (stopping what killed drivers left), print the record, exit
"""

from __future__ import annotations

import os
import sys
import time

import ray

from orchestrator.local_ray import records_dir
from orchestrator.tuner import init_ray


def main(mode: str) -> None:
    init_ray(None)
    ray.get(ray.remote(lambda: 1).remote())  # a worker process too, as a trial starts one
    print(records_dir() / f"{os.getpid()}.json", flush=True)
    if mode == "hold":
        time.sleep(600)


if __name__ == "__main__":
    main(sys.argv[1])
