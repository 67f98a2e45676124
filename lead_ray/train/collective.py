"""The collectives the loop needs, as int64/float64 CPU tensors: nothing is pickled, and every call works under the
process group's mixed backend (`cpu:gloo,cuda:nccl` on GPUs, where NCCL would refuse a CPU tensor and gloo carries
these small control messages). Each is a no-op for a single worker."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from lead_ray.select.rounds import Rescore, RoundPlan


def process_group_backend(use_gpu: bool) -> str:
    """The backend spec for Ray Train's TorchConfig: NCCL for the gradients of GPU workers, gloo for the CPU tensors
    of every collective here. A CPU-only torch has no NCCL, so CPU runs use gloo alone."""
    return "cpu:gloo,cuda:nccl" if use_gpu else "cpu:gloo"


def all_sum(values: list[float], world: int) -> list[float]:
    """Element-wise sum over ranks; also a barrier."""
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


PLAN_NONE, PLAN_TRAIN, PLAN_RESCORE = 0, 1, 2


def broadcast_plan(plan: RoundPlan | Rescore | None, world: int) -> RoundPlan | Rescore | None:
    """Rank 0's answer from the service on every rank: a RoundPlan, a Rescore or None (the run is over), sent as an
    int64 header (kind, round, ids, arms) and its arrays."""
    if world == 1:
        return plan
    rank0 = dist.get_rank() == 0
    header = torch.zeros(4, dtype=torch.int64)
    if rank0 and plan is not None:
        kind = PLAN_RESCORE if isinstance(plan, Rescore) else PLAN_TRAIN
        probs = 0 if kind == PLAN_RESCORE else len(plan.arm_probs)
        header = torch.tensor([kind, plan.round, len(plan.ids), probs], dtype=torch.int64)
    dist.broadcast(header, src=0)
    kind, round_index, n, k = header.tolist()
    if kind == PLAN_NONE:
        return plan if rank0 else None
    if rank0:
        ids = torch.tensor(plan.ids, dtype=torch.int64)  # copies: the plan's arrays may be read-only (object store)
        arms = torch.tensor(plan.arms, dtype=torch.int64) if k else torch.zeros(0)
        probs = torch.tensor(plan.arm_probs, dtype=torch.float64) if k else torch.zeros(0)
    else:
        ids = torch.empty(n, dtype=torch.int64)
        arms, probs = torch.empty(n if k else 0, dtype=torch.int64), torch.empty(k, dtype=torch.float64)
    for t in (ids, arms, probs):
        if t.numel():
            dist.broadcast(t, src=0)
    if rank0:
        return plan
    if kind == PLAN_RESCORE:
        return Rescore(round_index, ids.numpy())
    return RoundPlan(round_index, arms.numpy(), ids.numpy(), probs.numpy())


def broadcast_flag(flag: bool | None, world: int) -> bool:
    """Rank 0's yes or no on every rank (the others pass anything)."""
    if world == 1:
        return bool(flag)
    t = torch.tensor([int(bool(flag)) if dist.get_rank() == 0 else 0], dtype=torch.int64)
    dist.broadcast(t, src=0)
    return bool(t.item())


def gather_tokens(token: str | None, world: int) -> list[str | None]:
    """Every rank's 128-bit hex token (a uuid4 `.hex`, or None), on every rank."""
    if world == 1:
        return [token]
    mine = torch.zeros(3, dtype=torch.int64)  # present, then the token's 16 bytes as two int64
    if token is not None:
        mine[0] = 1
        mine[1:] = torch.from_numpy(np.frombuffer(bytes.fromhex(token), dtype=np.int64).copy())
    out = [torch.zeros(3, dtype=torch.int64) for _ in range(world)]
    dist.all_gather(out, mine)
    return [t[1:].numpy().tobytes().hex() if t[0] else None for t in out]
