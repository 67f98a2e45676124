"""Per-sample losses → the SelectionService: buffered into batches, sent without waiting, ≤ 1 call in flight.

A report leaves once `min_batch` losses are buffered and `min_seconds` have passed since the last one, so the one
central actor gets at most ~W/`min_seconds` calls a second from W workers, whatever the step time (bench/scale.py:
at 1,024 workers with 25 ms steps, 64-id reports alone meant ~5,000 calls a second); the loop sets `min_seconds` by
`report_interval(world)`. Workers step in lockstep, so
each one's first report of a round is offset by its `phase` (rank / world) of `min_seconds`: the calls arrive spread
over the interval, not as one burst of W. The round's last losses leave at `flush`, before `end_round`.

The reporter keeps the round's losses until the round ends: if the service restarted meanwhile (its incarnation
token changed, seen on a report or at `end_round`), everything of this round is sent again, so a crash of the
service loses nothing. On rank 0 it also keeps how many rounds the selection journal holds (`rounds`, what the round
checkpoint stores) and the plan asked for since, and gives both back to a restarted service. `next_round` and
`end_round` hide those handshakes from the loop.
"""

from __future__ import annotations

import time

import numpy as np
import ray
import torch

from lead_ray.select.rounds import Rescore, RoundPlan
from lead_ray.select.service import is_lost
from lead_ray.train.collective import broadcast_flag, gather_tokens

REPORT_MIN_BATCH = 64  # losses per report, at least (the round's last ones leave at the flush)
REPORT_MIN_SECONDS = 1.0  # between one worker's reports, at least
REPORT_CALLS_PER_SECOND = 500  # what all workers' reports may send the one actor, together


def report_interval(world: int) -> float:
    """Seconds between one worker's reports: at least REPORT_MIN_SECONDS, and long enough that `world` workers stay
    within REPORT_CALLS_PER_SECOND (bench/scale.py: the actor spends ~0.7 ms of CPU a call)."""
    return max(REPORT_MIN_SECONDS, world / REPORT_CALLS_PER_SECOND)


class LossReporter:
    def __init__(self, service, min_batch: int = REPORT_MIN_BATCH, min_seconds: float = REPORT_MIN_SECONDS,
                 phase: float = 0.0):
        self.service, self.min_batch, self.min_seconds, self.phase = service, min_batch, min_seconds, phase
        self.last_sent = time.monotonic()
        self.ids: list[np.ndarray] = []
        self.losses: list[torch.Tensor] = []
        self.buffered = 0
        self.pending: ray.ObjectRef | None = None
        self.sent: list[tuple[np.ndarray, np.ndarray]] = []  # this round's reports, for a resend
        self.incarnation: str | None = None
        self.rounds: int | None = None  # rank 0: rounds in the selection journal (None: none yet)
        self.planned: tuple = ()  # rank 0: (plan,) once next_round answered since `state`

    def _ask(self, method: str, *args):
        """Rank 0's call to the service. A service Ray restarted after a crash answers LOST: it gets the state and
        the plan back, and the call is made again."""
        while is_lost(answer := ray.get(getattr(self.service, method).remote(*args))):
            ray.get(self.service.restore.remote(self.rounds, self.planned))
        return answer

    def restore(self, rounds: int | None) -> None:
        """Rank 0: set the service to a checkpoint's selection state, after `rounds` rounds (None: round 0)."""
        ray.get(self.service.restore.remote(rounds))
        self.rounds, self.planned = rounds, ()

    def next_round(self) -> RoundPlan | Rescore | None:
        """Rank 0: the service's next plan (None: the run is over), or its request to re-score."""
        answer = self._ask("next_round")
        if not isinstance(answer, Rescore):
            self.planned = (answer,)
        return answer

    def start_round(self) -> None:
        self.sent = []
        self.last_sent = time.monotonic() - self.phase * self.min_seconds  # the first report comes (1 - phase) in

    def add(self, ids: np.ndarray, losses: torch.Tensor) -> None:
        """Queue this micro-batch's losses; they leave in one call once `min_batch` samples are buffered and
        `min_seconds` have passed since the last call."""
        self.ids.append(ids)
        self.losses.append(losses.detach())
        self.buffered += len(ids)
        if self.buffered >= self.min_batch and time.monotonic() - self.last_sent >= self.min_seconds:
            self._send()

    def _send(self) -> None:
        if not self.ids:
            return
        self._wait()  # at most one report in flight per worker
        ids = np.concatenate(self.ids)
        losses = torch.cat(self.losses).float().cpu().numpy()
        self.pending = self.service.report.remote(ids, losses)
        self.last_sent = time.monotonic()
        self.sent.append((ids, losses))
        self.ids, self.losses, self.buffered = [], [], 0

    def _wait(self) -> None:
        if self.pending is None:
            return
        token = ray.get(self.pending)
        self.pending = None
        if self.incarnation is not None and token != self.incarnation:  # the service restarted: resend
            token = ray.get([self.service.report.remote(i, v) for i, v in self.sent])[-1]
        self.incarnation = token

    def resend(self) -> None:
        """Send every report of this round again (the service restarted since); an empty report if there were
        none, which still fetches the current incarnation token."""
        self._wait()
        batches = self.sent or [(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32))]
        self.incarnation = ray.get([self.service.report.remote(i, v) for i, v in batches])[-1]

    def flush(self) -> None:
        """Send what is buffered and wait until the service has every loss (call before end_round)."""
        self._send()
        self._wait()

    def end_round(self, rank: int, world: int, grad: np.ndarray | None, step: np.ndarray | None,
                  round_index: int) -> dict | None:
        """Rank 0 ends the round (with ḡ and u) once the service holds every loss of it: a service that restarted
        after a worker's last report answers None, and every worker sends the round's losses again. Returns the
        round's selection stats on rank 0, None elsewhere."""
        while True:
            self.flush()
            tokens = gather_tokens(self.incarnation, world)
            answer = self._ask("end_round", grad, step, round_index, tokens) if rank == 0 else None
            if broadcast_flag(answer is not None if rank == 0 else None, world):
                if rank == 0:
                    self.rounds, self.planned = answer.rounds, ()
                return answer.stats if rank == 0 else None
            self.resend()
