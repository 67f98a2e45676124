"""SelectionService: the one Ray actor per run that owns the selection state. A thin shell over a selection
strategy (`lead_ray.select.strategies`).

With a `state_dir` it persists its state after every planned and every finished round, so that Ray can restart
it after a crash (`max_restarts`) and it carries on from there. Each incarnation has its own token, returned by
`report` and checked by `end_round`, so workers notice a restart and send the round's losses again.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import ray

from lead_ray.select.params import SelectionParams
from lead_ray.select.rounds import RoundBook
from lead_ray.select.snapshot import load_state, save_state
from lead_ray.select.strategies import build_selector, columns_needed


class SelectionService:
    def __init__(self, enriched_path: str, params: SelectionParams | dict[str, Any], state_dir: str | None = None):
        self.enriched_path = enriched_path
        self.params = params if isinstance(params, SelectionParams) else SelectionParams(**params)
        self.selector = self._fresh_selector()
        self.state_dir = Path(state_dir) if state_dir else None
        self.incarnation = uuid.uuid4().hex
        if self.state_dir is not None and (self.state_dir / "selector.json").exists():
            self.selector.load_state(load_state(self.state_dir))
            print(f"[lead-ray] selection service restored at round {self.selector.round} from {self.state_dir}",
                  flush=True)

    def _fresh_selector(self) -> RoundBook:
        table = pq.read_table(self.enriched_path, columns=columns_needed(self.params))
        ids = table.column("id").to_numpy()
        if not np.array_equal(ids, np.arange(len(ids))):
            raise ValueError(f"{self.enriched_path}: ids must be dense 0..N-1 in order")
        return build_selector({name: table.column(name).to_numpy() for name in table.column_names}, self.params)

    def reset(self) -> None:
        """Back to round 0 (training restarted from the base model, with no checkpoint to agree with)."""
        self.selector = self._fresh_selector()
        self._persist()

    def _persist(self) -> None:
        """Write the state next to the old one, then swap each file in with an atomic rename."""
        if self.state_dir is None:
            return
        tmp = self.state_dir.with_name(self.state_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        save_state(self.selector.state(), tmp)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for name in ("selector.npz", "selector.json"):  # the json last: it is what marks a state as present
            os.replace(tmp / name, self.state_dir / name)
        shutil.rmtree(tmp, ignore_errors=True)

    def next_round(self) -> dict[str, Any] | None:
        """The next round's plan; or `{"rescore": ids}` when the selector first needs the current model's NLL of
        those ids (iterative_rescore), which the workers send with `report_scores` before asking again."""
        need = self.selector.rescore_request()
        if need is not None:
            return {"round": self.selector.round, "rescore": need}
        fresh = self.selector.plan is None
        plan = self.selector.next_round()
        if plan is None:
            return None
        if fresh:
            self._persist()
        return {"round": plan.round, "ids": plan.ids, "arms": plan.arms, "arm_probs": plan.arm_probs}

    def report(self, ids: np.ndarray, losses: np.ndarray) -> str:
        self.selector.report(ids, losses)
        return self.incarnation

    def report_scores(self, ids: np.ndarray, nll: np.ndarray) -> str:
        self.selector.report_scores(ids, nll)
        return self.incarnation

    def end_round(self, grad: np.ndarray, step: np.ndarray, round_index: int,
                  incarnations: list[str | None] | None = None) -> dict[str, Any] | None:
        """End round `round_index`. `incarnations` are the tokens the workers last got from `report`: if any
        differs from this incarnation, some of the round's losses may have died with an earlier one, so the answer
        is None and the workers send the round's losses again before asking once more."""
        s = self.selector
        if s.plan is None and s.round_stats and s.round_stats[-1]["round"] == round_index:
            return s.round_stats[-1]  # a retry after a restart: this round is already done
        if incarnations is not None and any(t != self.incarnation for t in incarnations):
            return None
        stats = s.end_round(grad, step)
        self._persist()
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
        self._persist()
        return self.selector.round

    def summary(self) -> dict[str, Any]:
        s = self.selector
        return {"rounds": s.round, "num_unique": s.num_unique, "budget": s.budget, "stop_reason": s.stop_reason,
                "round_stats": s.round_stats, "arm_probs": s.arm_probs().tolist()}

    def selections(self) -> dict[str, np.ndarray]:
        return self.selector.selections()


def start_service(enriched_path: str, params: SelectionParams | dict[str, Any], name: str | None = None,
                  state_dir: str | None = None, max_restarts: int = 3) -> ray.actor.ActorHandle:
    """Create the actor on the driver's node (outputs land next to the driver), using no CPU slot. Calls to a
    restarting actor are retried (`max_task_retries=-1`), so callers see a pause, not an error."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    actor = ray.remote(num_cpus=0)(SelectionService)
    return actor.options(name=name, max_restarts=max_restarts, max_task_retries=-1 if max_restarts else 0,
                         scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(
        enriched_path, params, state_dir)
