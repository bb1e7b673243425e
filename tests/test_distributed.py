"""The data-parallel seams of workers/finetune/distributed.py, without Ray: slicing the global batches,
gradient averaging weighted by clips, and the worker loop itself on two gloo processes."""

import socket
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from shards.batching import PlannedBatch
from workers.finetune.balance import TrainingLoss
from workers.finetune.distributed import DataParallel, shard_batch
from workers.finetune.recipe import train_step


def test_every_worker_slices_the_same_global_batches_and_skips_one_too_small_for_all():
    plans = [
        PlannedBatch(np.arange(8), np.arange(8) * 10),
        PlannedBatch(np.arange(8, 13)),
        PlannedBatch(np.array([13])),
    ]
    shares = [DataParallel(rank, 2).share(plans) for rank in range(2)]
    assert [len(s) for s in shares] == [2, 2]  # same steps on every worker; the 1-clip batch is left out
    for k in range(2):  # each global batch, split between the workers without overlap
        together = np.concatenate([shares[0][k].rows, shares[1][k].rows])
        assert sorted(together) == sorted(plans[k].rows)
    assert list(shares[1][0].crop_starts) == [10, 30, 50, 70]  # crops travel with their clips
    assert [len(s.rows) for s in (shares[0][1], shares[1][1])] == [3, 2]  # a short batch splits unevenly


def test_each_worker_draws_with_its_own_seed_and_rank_0_keeps_the_trials():
    seeds = [DataParallel(rank, 4).seed(7) for rank in range(4)]
    assert seeds[0] == 7 and len(set(seeds)) == 4


MAX_GRAD_NORM = 0.05  # far below the gradient norm of this batch: the clip bites
CPU = torch.device("cpu")


@dataclass
class Batch:
    """The two fields train_step reads of a batch: its rows (clip count) and labels; `inputs` go to the source."""

    rows: np.ndarray
    inputs: torch.Tensor
    labels: torch.Tensor

    def to(self, device):
        return self


class LinearSource:
    def __init__(self, model):
        self.model = model

    def logits(self, batch: Batch) -> torch.Tensor:
        return self.model(batch.inputs)


def global_batch() -> Batch:
    """3 clips: split 2 + 1 between two workers, so a plain mean of their gradients would be wrong."""
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(3, 6, generator=generator) * 3
    return Batch(np.arange(3), inputs, torch.tensor([0, 3, 1]))


def fresh_model() -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(6, 5)


def one_step(batch: Batch, parallel=None) -> torch.nn.Linear:
    """One recipe step (train_step) with clipping on, from the same start weights."""
    model = fresh_model()
    parameters = list(model.parameters())
    optimizer = torch.optim.SGD(parameters, lr=1.0)
    cfg = SimpleNamespace(max_grad_norm=MAX_GRAD_NORM, task="categorical")
    classes = SimpleNamespace(labels=tuple(range(5)), dimensions=())  # the recipe reads what the model predicts
    trial = SimpleNamespace(
        device=CPU,
        cfg=cfg,
        parallel=parallel,
        criterion=TrainingLoss(),
        data=SimpleNamespace(reader=None),
        model=classes,
    )
    train_step(trial, LinearSource(model), optimizer, parameters, [batch])
    return model


def _step_on_rank(rank: int, port: int, out) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    full = global_batch()
    mine = shard_batch(PlannedBatch(full.rows), rank, 2).rows  # rank 0: clips 0 and 2, rank 1: clip 1
    batch = Batch(mine, full.inputs[mine], full.labels[mine])
    model = one_step(batch, parallel=DataParallel(rank, 2))
    out[rank] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    dist.destroy_process_group()


def test_a_data_parallel_step_equals_the_single_process_step_on_an_uneven_global_batch_with_clipping():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    weights = mp.Manager().dict()
    mp.spawn(_step_on_rank, args=(port, weights), nprocs=2)

    single = one_step(global_batch()).state_dict()
    start = fresh_model().state_dict()
    moved = torch.sqrt(sum(((single[k] - start[k]) ** 2).sum() for k in start))
    torch.testing.assert_close(moved, torch.tensor(MAX_GRAD_NORM))  # SGD lr 1: the step is the clipped gradient
    for rank in (0, 1):
        for name, value in single.items():
            torch.testing.assert_close(weights[rank][name], value, atol=1e-6, rtol=1e-5)


# --- the worker loop itself (distributed.run_worker, what Ray Train's worker_loop runs), on two processes

WORKER_VALUES = dict(
    train_speakers=("0011", "0012"),
    eval_sets={"test_en": ("0015",)},
    val_fraction=0.2,  # 48 training clips: 9 batches of 5 and a short one of 3 (split 2 + 1)
    stages=({"trainable": "all_but_cnn", "epochs": 1, "learning_rate": 1e-3, "batch_size": 5},),
    eval_every_steps=3,
    prefetch_batches=0,
    hidden_dropout=0.0,  # no random draws: the two-worker trial must equal the one-process trial
    attention_dropout=0.0,
    activation_dropout=0.0,
    layerdrop=0.0,
    mask_time_prob=0.0,
    head_dropout=0.0,
)


class FinalReporter:
    def __init__(self):
        self.final = {}

    def report(self, metrics, checkpoint_dir=None):
        self.final = dict(metrics)


def _worker_on_rank(rank: int, port: int, values: dict, out) -> None:
    from workers.finetune.distributed import run_worker
    from workers.payload import TrainWorkers, TrialPayload

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    workers = TrainWorkers(num_workers=2, cpus_per_worker=1, gpus_per_worker=0, storage_path="")
    config = TrialPayload(values, distributed=workers, trial_id="dp", trial_name="dp").to_config()
    reporter = FinalReporter()
    run_worker(config, rank, 2, CPU, None, reporter)
    out[rank] = {**reporter.final, "torch_seed": torch.initial_seed()}
    dist.destroy_process_group()


@pytest.mark.slow
def test_the_worker_loop_trains_the_global_batch_in_sync_with_its_own_seed(demo_dir, tmp_path):
    """Two workers of one trial end where one process ends (same steps, same model: the batch is global and
    the gradients are synced, weighted by clips); without the sync call their models drift apart."""
    from workers.core.reporting import ListReporter
    from workers.core.tracking import NullLogger
    from workers.finetune.config import TrialConfig
    from workers.finetune.recipe import run_trial

    values = {**WORKER_VALUES, "data_dir": str(demo_dir), "feature_cache_dir": str(tmp_path / "features")}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    finals = mp.Manager().dict()
    mp.spawn(_worker_on_rank, args=(port, values, finals), nprocs=2)
    single = run_trial(TrialConfig(**values), NullLogger(), ListReporter(), device=CPU)

    assert single["step"] == 10  # ceil(48 / 5): the one-process trial's steps
    assert finals[0]["step"] == finals[1]["step"] == single["step"]  # batch_size is global
    for key in ("val/loss", "test_en/loss"):
        assert finals[0][key] == finals[1][key]  # every worker holds the same model
        assert abs(finals[0][key] - single[key]) < 1e-4  # ... the one-process trial's
    assert abs(finals[0]["val/loss"] - finals[0]["test_en/loss"]) > 0  # (not a constant)
    assert finals[0]["torch_seed"] == 0 and finals[1]["torch_seed"] != 0  # each worker its own draws
