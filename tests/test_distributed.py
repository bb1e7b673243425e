"""The data-parallel seams of workers/distributed.py, without Ray: sharding and gradient averaging."""

import socket

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from workers.distributed import average_gradients_before_step, shard_rows


def test_shards_are_equal_disjoint_and_cover_all_but_a_remainder():
    rows = np.arange(11)
    shards = [shard_rows(rows, rank, 3) for rank in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]  # equal: every worker runs the same number of steps
    assert len(np.unique(np.concatenate(shards))) == 9


def _step_on_rank(rank: int, port: int, out) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    handle = average_gradients_before_step(world=2)
    model(torch.full((1, 3), float(rank + 1))).sum().backward()  # rank 0 sees 1s, rank 1 sees 2s
    optimizer.step()
    handle.remove()
    out[rank] = model.weight.detach().clone()
    dist.destroy_process_group()


def test_gradients_are_averaged_across_workers_before_each_step():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    weights = mp.Manager().dict()
    mp.spawn(_step_on_rank, args=(port, weights), nprocs=2)
    torch.manual_seed(0)
    start = torch.nn.Linear(3, 1).weight.detach()
    for rank in (0, 1):  # both took the mean gradient (1 + 2) / 2, so they stay identical
        assert torch.allclose(weights[rank], start - 1.5)
