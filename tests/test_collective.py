"""The loop's collectives in a real 2-process gloo group, under the device-qualified backend spec the GPU path uses
(`cpu:gloo`, the CPU half of `cpu:gloo,cuda:nccl`): plans, flags, tokens and sums arrive whole, as CPU tensors, and
nothing is pickled (the object collectives are made to fail)."""

from __future__ import annotations

import socket
import uuid

import numpy as np
import torch.distributed as dist
import torch.multiprocessing as mp

from lead_ray.select.rounds import Rescore, RoundPlan
from lead_ray.train.collective import (
    all_sum,
    broadcast_flag,
    broadcast_plan,
    gather_tokens,
    process_group_backend,
)

WORLD = 2
TOKENS = [uuid.UUID(int=7).hex, None]  # rank 0's token, and a rank that has none yet


def _refuse(*args, **kwargs):
    raise AssertionError("an object collective was called: it would unpickle what a peer sends")


def _check_cpu(fn):
    def wrapped(tensor, *args, **kwargs):
        items = tensor if isinstance(tensor, list) else [tensor]
        assert all(t.device.type == "cpu" for t in items), "a collective got a non-CPU tensor"
        return fn(tensor, *args, **kwargs)
    return wrapped


def _worker(rank: int, port: int, results) -> None:
    dist.init_process_group(process_group_backend(False), init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD)
    dist.broadcast_object_list = dist.all_gather_object = _refuse
    dist.broadcast, dist.all_gather, dist.all_reduce = (_check_cpu(f) for f in (dist.broadcast, dist.all_gather,
                                                                              dist.all_reduce))
    try:
        plan = RoundPlan(3, np.array([0, 0, 2]), np.array([5, 1, 9], dtype=np.int64), np.array([0.25, 0.5, 0.25]))
        empty = RoundPlan(5, np.zeros(0, np.int64), np.zeros(0, np.int64), np.array([1.0]))
        got = [broadcast_plan(plan if rank == 0 else None, WORLD),
               broadcast_plan(Rescore(4, np.arange(4)) if rank == 0 else None, WORLD),
               broadcast_plan(empty if rank == 0 else None, WORLD),
               broadcast_plan(None, WORLD),
               broadcast_flag(True if rank == 0 else False, WORLD),
               broadcast_flag(False if rank == 0 else True, WORLD),
               gather_tokens(TOKENS[rank], WORLD),
               all_sum([1.5 * (rank + 1), 2.0], WORLD)]
        results[rank] = got
    finally:
        dist.destroy_process_group()


def test_collectives_send_tensors_not_pickles() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(port, results), nprocs=WORLD, join=True)
    r0, r1 = results[0], results[1]
    # every rank gets the whole plan, typed
    for r in (r0, r1):
        assert isinstance(r[0], RoundPlan) and r[0].round == 3 and r[0].ids.tolist() == [5, 1, 9]
        assert r[0].arms.tolist() == [0, 0, 2] and r[0].arm_probs.tolist() == [0.25, 0.5, 0.25]
        assert isinstance(r[1], Rescore) and r[1].round == 4 and r[1].ids.tolist() == [0, 1, 2, 3]
        assert isinstance(r[2], RoundPlan) and r[2].round == 5 and r[2].ids.tolist() == []  # still a round
    assert r0[3] is None and r1[3] is None
    assert [r0[4], r1[4], r0[5], r1[5]] == [True, True, False, False]  # rank 0's answer wins
    assert r0[6] == r1[6] == TOKENS
    assert r0[7] == r1[7] == [1.5 + 3.0, 4.0]


def test_single_worker_needs_no_process_group() -> None:
    assert not dist.is_initialized()
    plan = RoundPlan(0, np.zeros(3, np.int64), np.arange(3), np.array([1.0]))
    assert broadcast_plan(plan, 1) is plan and broadcast_plan(None, 1) is None
    assert broadcast_flag(True, 1) is True and gather_tokens("ab" * 16, 1) == ["ab" * 16]
    assert all_sum([1.0, 2.0], 1) == [1.0, 2.0]


def test_gpu_runs_use_the_mixed_backend() -> None:
    # NCCL refuses CPU tensors: with GPUs the group must route the CPU tensors above to gloo
    assert process_group_backend(True) == "cpu:gloo,cuda:nccl"
    assert process_group_backend(False) == "cpu:gloo"
