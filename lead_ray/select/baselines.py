"""The baselines LEAD is measured against, on the shared round bookkeeping (`rounds.RoundBook`). Pure NumPy.

The static baselines (random, full, longest, static top-IU / top-IFD) and the IFD warm-up run through the same
SelectionService and training loop as LEAD, so only the choice of samples differs. A static selector takes the
`budget` best rows by its score once, before training, and trains them `max_uses` times (epochs), `round_size`
rows per round.

`iterative_rescore` is the expensive model-aware method LEAD replaces: before every round the training workers
score every eligible sample with the current model (a full forward pass over them), and the round takes the
highest-NLL ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lead_ray.select.rounds import RoundBook, RoundPlan

STATIC_SELECTORS = ("random", "full", "longest", "static_iu", "static_ifd")


def baseline_scores(kind: str, columns: dict[str, np.ndarray], seed: int = 0) -> np.ndarray:
    """The score a static selector ranks by (highest first; ties by lower id)."""
    n = len(columns["id"])
    if kind == "random":
        return np.random.default_rng(seed).random(n)
    if kind == "full":
        return np.zeros(n)
    if kind == "longest":
        return np.asarray(columns["n_response_tokens"], dtype=np.float64)
    if kind == "static_iu":
        return np.asarray(columns["iu0"], dtype=np.float64)
    if kind == "static_ifd":
        return np.asarray(columns["ifd"], dtype=np.float64)
    raise ValueError(f"unknown static selector {kind!r}; expected one of {STATIC_SELECTORS}")


class StaticSelector(RoundBook):
    """A fixed plan: the `budget` best rows by a score, `round_size` per round (default: LEAD's sample rate times
    the selectable pool), `max_uses` epochs."""

    def __init__(self, iu0: np.ndarray, arm: np.ndarray, group: np.ndarray, *, scores: np.ndarray, **params: Any):
        super().__init__(iu0, arm, group, **params)
        selectable = np.flatnonzero(self.arm >= 0)
        s = np.asarray(scores, dtype=np.float64)[selectable]
        self.order = selectable[np.lexsort((selectable, -s))][: self.budget]
        size = self.params.round_size or int(np.ceil(self.sample_rate * len(selectable)))
        self.round_size = max(1, int(size))
        self.rounds_per_epoch = max(1, -(-len(self.order) // self.round_size))

    def next_round(self) -> RoundPlan | None:
        if self.plan is not None:
            return self.plan
        epoch, step = divmod(self.round, self.rounds_per_epoch)
        if epoch >= self.max_uses or len(self.order) == 0:
            self.stop_reason = "budget"
            return None
        ids = self.order[step * self.round_size : (step + 1) * self.round_size]
        return self.start_round(ids, self.arm[ids], self.arm_probs())


class IterativeRescoreSelector(RoundBook):
    """Each round: the current model's NLL of every eligible sample (uses < max_uses), then the `round_size`
    highest, until the unique-sample budget is spent. The scores come from the workers (`rescore_request` →
    `report_scores`); a round cannot start before all of them are in."""

    def __init__(self, iu0: np.ndarray, arm: np.ndarray, group: np.ndarray, **params: Any):
        super().__init__(iu0, arm, group, **params)
        size = self.params.round_size
        if size is None:  # rounds as large as LEAD's, on average over its arms
            quota = np.maximum(1, np.floor(self.sample_rate * self.cell_size)) * (self.cell_size > 0)
            size = int(np.ceil(quota.sum(axis=1).mean()))
        self.round_size = max(1, int(size))
        self.scores = np.full(len(self.idu), np.nan)

    def rescore_request(self) -> np.ndarray | None:
        if self.plan is not None or self.stopped():
            return None
        eligible = np.flatnonzero(self.eligible_mask())
        missing = eligible[np.isnan(self.scores[eligible])]
        return missing if len(missing) else None

    def report_scores(self, ids: np.ndarray, nll: np.ndarray) -> None:
        self.scores[np.asarray(ids, dtype=np.int64)] = np.asarray(nll, dtype=np.float64)

    def next_round(self) -> RoundPlan | None:
        if self.plan is not None:
            return self.plan
        if self.stopped():
            return None
        eligible = np.flatnonzero(self.eligible_mask())
        if np.isnan(self.scores[eligible]).any():
            raise RuntimeError("iterative_rescore: next_round before every eligible sample was scored")
        ids = eligible[np.lexsort((eligible, -self.scores[eligible]))][: self.round_size]
        ids = ids[self.within_budget(ids, self.scores)]
        return self.start_round(ids, self.arm[ids], self.arm_probs())

    def replay(self, plan: RoundPlan | None) -> None:
        """The plan came from scores of a model that has moved since: take it as it was."""
        if plan is None:
            self.next_round()
        else:
            self.start_round(np.asarray(plan.ids), np.asarray(plan.arms), np.asarray(plan.arm_probs))

    def end_round(self, grad: np.ndarray, step: np.ndarray) -> dict[str, Any]:
        stats = super().end_round(grad, step)
        self.scores[:] = np.nan  # the model moved: every score is stale
        return stats

