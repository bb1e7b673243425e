"""One trial on several processes: a Ray Train TorchTrainer inside the Tune trial, data-parallel.

Ray 2.60 (Train V2) runs this as a Tune function trainable that builds a TorchTrainer, named
after the trial id, and calls `fit()`; `TuneReportCallback` forwards rank 0's reports to Tune.
Each worker runs the unchanged recipe with a `DataParallel` seam:
- `batch_size` is global, as in HF's Trainer and Lightning with DDP divided by the world: every
  worker plans the same epoch (same data seed, all training clips, `batch_size` clips a step) and
  trains its slice of each planned batch, so a step sees `batch_size` clips whatever the number of
  workers, and an epoch has as many steps as with one process;
- after every step's backward passes and before gradient clipping, the gradients are averaged
  across workers weighted by each worker's clips (a short last batch splits unevenly), so the clip
  and the optimizer see the gradient of the mean loss over the global batch (as with one process);
- each worker seeds its own dropout, layerdrop and SpecAugment draws (rank 0 keeps the trial's seed).
A seam rather than DDP: the set of trainable parameters changes between stages of the freeze
schedule, which DDP's fixed buckets do not allow.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    from workers.vocabulary import trial_run_name

    payload = TrialPayload.from_config(config)
    context = tune.get_context()
    trial_id = context.get_trial_id()
    run_name = trial_run_name(trial_id, payload.label) if payload.label else context.get_trial_name()
    # Only to replay a completed run: rank 0 records the attempt when it opens the run to train.
    logger = open_logger(payload, trial_id, run_name, record_attempt=False)
    if replay_if_completed(logger, TuneReporter(), tune.get_checkpoint()):
        return
    parallel = payload.distributed
    payload = dataclasses.replace(payload, trial_id=trial_id, trial_name=run_name)
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
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    run_worker(config, rank, world, ray.train.torch.get_device(), ray.train.get_checkpoint(), TrainReporter(rank))


def run_worker(config: dict, rank: int, world: int, device, checkpoint, reporter) -> dict[str, float]:
    """One worker's part of the trial (a process group of `world` is up): rank 0 logs to the trial's run."""
    import dataclasses

    from workers.core.tracking import NullLogger
    from workers.finetune.config import TrialConfig
    from workers.payload import TrialPayload
    from workers.trial import open_logger, run_recorded
    from workers.vocabulary import Tag

    payload = TrialPayload.from_config(config)
    num_threads = max(1, int(payload.distributed.cpus_per_worker))
    payload = dataclasses.replace(payload, values={**payload.values, "num_threads": num_threads})
    TrialConfig.from_dict(payload.values)  # fail on every rank alike, before any collective
    logger = open_logger(payload, payload.trial_id, payload.trial_name) if rank == 0 else NullLogger()
    nodes = worker_nodes(world)  # a collective: every rank, before any other
    logger.set_tags({Tag.TRAIN_WORKER_NODES: ",".join(nodes)})
    return run_recorded(
        payload,
        logger,
        reporter,
        checkpoint=checkpoint,
        device=device,
        parallel=DataParallel(rank, world),
    )


def worker_nodes(world: int) -> list[str]:
    """Every rank's Ray node id, in rank order (one all-gather): where a data-parallel trial ran."""
    import torch.distributed as dist

    from workers.core.tracking import ray_node_id

    if not dist.is_initialized():
        return [ray_node_id()]
    nodes: list[str] = [""] * world
    dist.all_gather_object(nodes, ray_node_id())
    return nodes


@dataclass(frozen=True)
class DataParallel:
    """This process's place in a data-parallel trial: the recipe's seam (`run_trial(parallel=...)`)."""

    rank: int
    world: int

    def share(self, plans: list, min_clips: int = 1) -> list:
        """This worker's slice of each of the epoch's global batches (every worker planned the same ones).

        A batch too small to give every worker `min_clips` clips (a short last batch) is left out on all
        workers alike: every worker must run the same steps, or the all-reduce waits forever."""
        return [shard_batch(p, self.rank, self.world) for p in plans if len(p.rows) >= self.world * min_clips]

    def seed(self, seed: int) -> int:
        """The worker's own seed for dropout and masking draws; rank 0 keeps the trial's."""
        if self.rank == 0:
            return seed
        return int(np.random.SeedSequence([seed, self.rank]).generate_state(1)[0])

    def sync_gradients(self, parameters: list, num_clips: int) -> None:
        average_gradients(parameters, num_clips)


def shard_batch(plan, rank: int, world: int):
    """Every `world`-th clip of a planned batch from `rank` on (length-sorted batches: similar lengths)."""
    return plan.select(slice(rank, None, world))


def average_gradients(parameters: list, num_clips: int) -> None:
    """Replace every parameter's gradient (of this worker's mean loss over its `num_clips` clips) by the
    gradient of the mean loss over every worker's clips: sum of clips x gradient, over the sum of clips
    (one all-reduce). A plain mean of the workers' gradients would weigh a clip of a short share more."""
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
    clips = torch.tensor([float(num_clips)], dtype=grads[0].dtype, device=grads[0].device)
    flat = torch.cat([g.reshape(-1) * num_clips for g in grads] + [clips])  # one collective per step
    dist.all_reduce(flat)
    flat = flat[:-1] / flat[-1]
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
