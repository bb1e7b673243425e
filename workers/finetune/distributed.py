"""One trial on several processes: a Ray Train TorchTrainer inside the Tune trial, data-parallel.

Ray 2.60 (Train V2) runs this as a Tune function trainable that builds a TorchTrainer, named
after the trial id, and calls `fit()`; `TuneReportCallback` forwards rank 0's reports to Tune.
Each worker runs the unchanged recipe on its share of the training clips (`shard_rows`);
the recipe's `sync_gradients` seam averages the gradients across workers after every step's
backward passes and before gradient clipping, so the clip sees the global gradient (as with one
process, or DDP). A seam rather than DDP: the set of trainable parameters changes between stages
of the freeze schedule, which DDP's fixed buckets do not allow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def train_emotion_distributed(config: dict) -> None:
    import dataclasses

    import ray.train
    from ray import tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from workers.core.reporting import TuneReporter
    from workers.payload import TrialPayload
    from workers.trial import open_logger, replay_if_completed

    payload = TrialPayload.from_config(config)
    context = tune.get_context()
    # Only to replay a completed run: rank 0 records the attempt when it opens the run to train.
    logger = open_logger(payload, context.get_trial_id(), context.get_trial_name(), record_attempt=False)
    if replay_if_completed(logger, TuneReporter(), tune.get_checkpoint()):
        return
    parallel = payload.distributed
    payload = dataclasses.replace(payload, trial_id=context.get_trial_id(), trial_name=context.get_trial_name())
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config=payload.to_config(),
        scaling_config=ray.train.ScalingConfig(
            num_workers=parallel.num_workers,
            use_gpu=parallel.gpus_per_worker > 0,
            resources_per_worker={
                "CPU": float(parallel.cpus_per_worker),
                **({"GPU": float(parallel.gpus_per_worker)} if parallel.gpus_per_worker else {}),
            },
        ),
        # Same name and storage on a retry or restore: Train continues from its latest checkpoint.
        run_config=ray.train.RunConfig(
            name=context.get_trial_id(), storage_path=parallel.storage_path, callbacks=[TuneReportCallback()]
        ),
    )
    trainer.fit()


def worker_loop(config: dict) -> None:
    import dataclasses

    import ray.train
    import ray.train.torch

    from workers.core.tracking import NullLogger
    from workers.finetune.config import TrialConfig
    from workers.payload import TrialPayload
    from workers.trial import open_logger, run_recorded

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    payload = TrialPayload.from_config(config)
    num_threads = max(1, int(payload.distributed.cpus_per_worker))
    payload = dataclasses.replace(payload, values={**payload.values, "num_threads": num_threads})
    TrialConfig.from_dict(payload.values)  # fail on every rank alike, before any collective
    logger = open_logger(payload, payload.trial_id, payload.trial_name) if rank == 0 else NullLogger()
    run_recorded(
        payload,
        logger,
        TrainReporter(rank),
        checkpoint=ray.train.get_checkpoint(),
        device=ray.train.torch.get_device(),
        shard_rows=lambda rows: shard_rows(rows, rank, world),
        sync_gradients=lambda parameters: average_gradients(parameters, world),
    )


def shard_rows(rows: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This worker's equal share: every worker must run the same number of steps, or the
    gradient all-reduce of the longer ones waits forever. Drops at most world-1 clips."""
    usable = len(rows) // world * world
    return rows[:usable][rank::world]


def average_gradients(parameters: list, world: int) -> None:
    """Replace every parameter's gradient by its mean over the `world` workers (one all-reduce)."""
    import torch
    import torch.distributed as dist

    if not parameters:
        return
    # Every rank trains the same parameters, but not every parameter has a gradient on every rank
    # (layerdrop skips random layers per rank): count a missing one as zero, as DDP does, so all
    # ranks reduce buffers of the same size.
    for p in parameters:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])  # one collective per step, not one per tensor
    dist.all_reduce(flat)
    flat /= world
    for grad, synced in zip(grads, torch.split(flat, [g.numel() for g in grads])):
        grad.copy_(synced.view_as(grad))


class TrainReporter:
    """Reports from a Train worker: every rank reports (Train waits for all); rank 0 brings the checkpoint."""

    def __init__(self, rank: int):
        self.rank = rank

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None = None) -> None:
        import ray.train

        checkpoint = None
        if checkpoint_dir is not None and self.rank == 0:
            checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir))
        ray.train.report(metrics, checkpoint=checkpoint)
