"""The three collectives the loop needs, as no-ops for a single worker."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def broadcast(obj: Any, world: int) -> Any:
    """Rank 0's `obj` on every rank."""
    if world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any, world: int) -> list[Any]:
    if world == 1:
        return [obj]
    box: list[Any] = [None] * world
    dist.all_gather_object(box, obj)
    return box


def all_sum(values: list[float], world: int) -> list[float]:
    """Element-wise sum over ranks; also a barrier."""
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()
