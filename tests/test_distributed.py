"""The data-parallel seams of workers/finetune/distributed.py, without Ray: sharding and gradient averaging."""

import socket
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from workers.finetune.distributed import average_gradients, shard_rows
from workers.finetune.recipe import train_step


def test_shards_are_equal_disjoint_and_cover_all_but_a_remainder():
    rows = np.arange(11)
    shards = [shard_rows(rows, rank, 3) for rank in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]  # equal: every worker runs the same number of steps
    assert len(np.unique(np.concatenate(shards))) == 9


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
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(4, 6, generator=generator) * 3
    return Batch(np.arange(4), inputs, torch.tensor([0, 3, 1, 4]))


def fresh_model() -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(6, 5)


def one_step(batch: Batch, sync_gradients=None) -> torch.nn.Linear:
    """One recipe step (train_step) with clipping on, from the same start weights."""
    model = fresh_model()
    parameters = list(model.parameters())
    optimizer = torch.optim.SGD(parameters, lr=1.0)
    trial = SimpleNamespace(device=CPU, cfg=SimpleNamespace(max_grad_norm=MAX_GRAD_NORM), sync_gradients=sync_gradients)
    train_step(trial, LinearSource(model), optimizer, parameters, [batch])
    return model


def _step_on_rank(rank: int, port: int, out) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    full = global_batch()
    mine = shard_rows(full.rows, rank, 2)  # rank 0: clips 0 and 2, rank 1: clips 1 and 3
    batch = Batch(mine, full.inputs[mine], full.labels[mine])
    model = one_step(batch, sync_gradients=lambda parameters: average_gradients(parameters, world=2))
    out[rank] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    dist.destroy_process_group()


def test_a_data_parallel_step_equals_the_single_process_step_on_the_global_batch_with_clipping():
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
