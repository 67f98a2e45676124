"""SelectionService: the one Ray actor per run that owns LEAD's selection state. A thin shell over LeadSelector."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import ray

from lead_ray.select.selector import LeadSelector
from lead_ray.select.snapshot import load_state, save_state


class SelectionService:
    def __init__(self, enriched_path: str, params: dict[str, Any]):
        table = pq.read_table(enriched_path, columns=["id", "arm", "group", "iu0"])
        ids = table.column("id").to_numpy()
        if not np.array_equal(ids, np.arange(len(ids))):
            raise ValueError(f"{enriched_path}: ids must be dense 0..N-1 in order")
        arm = table.column("arm").to_numpy().astype(np.int64)
        self.selector = LeadSelector(table.column("iu0").to_numpy().astype(np.float64), arm,
                                     table.column("group").to_numpy(), **params)

    def next_round(self) -> dict[str, Any] | None:
        plan = self.selector.next_round()
        if plan is None:
            return None
        return {"round": plan.round, "ids": plan.ids, "arms": plan.arms, "arm_probs": plan.arm_probs}

    def report(self, ids: np.ndarray, losses: np.ndarray) -> None:
        self.selector.report(ids, losses)

    def end_round(self, g_slice: np.ndarray, learning_rate: float, extra: dict[str, Any]) -> dict[str, Any]:
        stats = self.selector.end_round(g_slice, learning_rate)
        stats.update(extra)
        return stats

    def snapshot(self) -> dict[str, bytes]:
        """The whole state as file bytes (npz + json), ready to be written into a checkpoint."""
        with tempfile.TemporaryDirectory() as d:
            save_state(self.selector.state(), Path(d))
            return {p.name: p.read_bytes() for p in Path(d).iterdir()}

    def restore(self, files: dict[str, bytes]) -> int:
        with tempfile.TemporaryDirectory() as d:
            for name, data in files.items():
                (Path(d) / Path(name).name).write_bytes(data)
            self.selector.load_state(load_state(Path(d)))
        return self.selector.round

    def summary(self) -> dict[str, Any]:
        s = self.selector
        return {"rounds": s.round, "num_unique": s.num_unique, "budget": s.budget, "stop_reason": s.stop_reason,
                "round_stats": s.round_stats, "arm_probs": s.bandit.probabilities().tolist()}

    def selections(self) -> dict[str, np.ndarray]:
        return self.selector.selections()


def start_service(enriched_path: str, params: dict[str, Any], name: str | None = None) -> ray.actor.ActorHandle:
    """Create the actor on the driver's node (outputs land next to the driver), using no CPU slot."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    actor = ray.remote(num_cpus=0, max_restarts=0)(SelectionService)
    return actor.options(name=name, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(
        enriched_path, params)
