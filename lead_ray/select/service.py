"""SelectionService: the one Ray actor per run that owns the selection state. A thin shell over a selection
strategy (`lead_ray.select.strategies`).

`end_round` writes the round's record into the run's selection journal (`lead_ray.select.journal`: one file per
round, only what the round changed) and answers how many rounds the journal holds; rank 0 puts that number into the
round checkpoint. The actor holds no state until it is given one (`restore(rounds)` reads the journal;
`start_service` gives a new one round 0's). After a crash Ray restarts it empty: it answers `LOST` until rank 0
gives back its round count, with the plan it got since, which the selector replays (planning is deterministic
given the state). Each incarnation has its own token, returned by
`report` and checked by `end_round`, so workers notice a restart and send the round's losses again.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import ray

from lead_ray.runtime.ray_init import on_driver_node
from lead_ray.select.journal import SelectionJournal
from lead_ray.select.metrics import ServiceMetrics
from lead_ray.select.params import SelectionParams
from lead_ray.select.rounds import LOST, Lost, Rescore, RoundBook, RoundEnd, RoundPlan
from lead_ray.select.strategies import build_selector, columns_needed


def is_lost(answer: Any) -> bool:
    return isinstance(answer, Lost)


class SelectionService:
    def __init__(self, enriched_path: str, params: SelectionParams | dict[str, Any], journal: str, run: str = ""):
        self.enriched_path, self.journal = enriched_path, SelectionJournal(journal)
        self.params = params if isinstance(params, SelectionParams) else SelectionParams(**params)
        self.metrics = ServiceMetrics(run)
        self.selector: RoundBook | None = None
        self.lost, self.incarnation = True, uuid.uuid4().hex
        self.recurring_error: str | None = None

    def record_error(self, error: str) -> None:
        """A Train worker's error that a retry would meet again (`train.loop.RECURRING`): the next attempt stops
        on it instead of retrying. The actor outlives the worker group, so the message crosses the restart."""
        self.recurring_error = self.recurring_error or error

    def recorded_error(self) -> str | None:
        return self.recurring_error

    def _fresh_selector(self) -> RoundBook:
        table = pq.read_table(self.enriched_path, columns=columns_needed(self.params))
        ids = table.column("id").to_numpy()
        if not np.array_equal(ids, np.arange(len(ids))):
            raise ValueError(f"{self.enriched_path}: ids must be dense 0..N-1 in order")
        return build_selector({name: table.column(name).to_numpy() for name in table.column_names}, self.params)

    def next_round(self) -> RoundPlan | Rescore | Lost | None:
        """The next round's plan (None: the run is over); or a Rescore when the selector first needs the current
        model's NLL of some ids (iterative_rescore), which the workers send with `report_scores` before asking
        again."""
        if self.lost:
            return LOST
        need = self.selector.rescore_request()
        if need is not None:
            return Rescore(self.selector.round, need)
        return self.selector.next_round()

    def report(self, ids: np.ndarray, losses: np.ndarray) -> str:
        t0 = time.perf_counter()
        if not self.lost:  # else dropped: the token tells the worker to send it again after the restore
            self.selector.report(ids, losses)
        self.metrics.report(time.perf_counter() - t0)
        return self.incarnation

    def report_scores(self, ids: np.ndarray, nll: np.ndarray) -> str:
        if not self.lost:  # else dropped: the restored selector asks for them again
            self.selector.report_scores(ids, nll)
        return self.incarnation

    def end_round(self, grad: np.ndarray, step: np.ndarray, round_index: int,
                  incarnations: list[str | None] | None = None) -> RoundEnd | Lost | None:
        """End round `round_index` and write its record; answers the round's stats and the journal's round count.
        `incarnations` are the tokens the workers last got from `report`: if any differs from this incarnation,
        some of the round's losses may have died with an earlier one, so the answer is None and the workers send
        the round's losses again before asking once more."""
        if self.lost:
            return LOST
        s = self.selector
        if s.plan is None and s.round_stats and s.round_stats[-1]["round"] == round_index:
            return RoundEnd(s.round_stats[-1], s.round)  # a retried call: the round is done
        if incarnations is not None and any(t != self.incarnation for t in incarnations):
            return None
        stats = s.end_round(grad, step)
        t0 = time.perf_counter()
        written = self.journal.write(s.round_record())
        self.metrics.persist(time.perf_counter() - t0, written)
        self._publish()
        return RoundEnd(stats, s.round)

    def restore(self, rounds: int | None, replay: tuple = ()) -> int:
        """Back to the state after `rounds` rounds, read from the journal (None or 0: round 0, training starts from
        the base model). `replay`: `(plan,)` if `next_round` answered `plan` since that state (None: the run was
        over), which is redone. The old state goes first, so the actor never holds two selectors (at 100M rows each
        is gigabytes); until the new one is built the service answers LOST."""
        self.selector, self.lost = None, True
        self.selector = self._fresh_selector()
        if rounds:
            self.selector.load_rounds(self.journal.read(rounds))
        if replay:
            self.selector.replay(*replay)
        self.lost, self.incarnation = False, uuid.uuid4().hex
        self._publish()
        return self.selector.round

    def _publish(self) -> None:
        s = self.selector
        self.metrics.state(s.round, s.num_unique, s.arm_probs())

    def summary(self) -> dict[str, Any]:
        if self.lost:
            return LOST
        s = self.selector
        return {"rounds": s.round, "num_unique": s.num_unique, "budget": s.budget, "stop_reason": s.stop_reason,
                "round_stats": s.round_stats, "arm_probs": s.arm_probs().tolist()}

    def selections(self) -> dict[str, np.ndarray]:
        return LOST if self.lost else self.selector.selections()


def start_service(enriched_path: str, params: SelectionParams | dict[str, Any], journal: str, name: str | None = None,
                  max_restarts: int = 3, run: str = "") -> ray.actor.ActorHandle:
    """Create the actor on the driver's node (outputs land next to the driver), using no CPU slot; `journal` is the
    folder (path or cloud URI) its round records go to. Calls to a
    restarting actor are retried (`max_task_retries=-1`), so callers see a pause, not an error."""
    actor = ray.remote(num_cpus=0)(SelectionService)
    service = actor.options(name=name, max_restarts=max_restarts, max_task_retries=-1 if max_restarts else 0,
                            **on_driver_node()).remote(enriched_path, params, journal, run)
    ray.get(service.restore.remote(None))  # round 0, before anyone else calls it (a bad pool fails here)
    return service
