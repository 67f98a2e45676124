"""Selection turned off: a fixed ranking of the pool, trained in order. Pure NumPy.

The static baselines (random, full, longest, static top-IU / top-IFD) and the IFD warm-up run through the same
SelectionService and training loop as LEAD, so only the choice of samples differs. A static selector takes the
`budget` best rows by its score once, before training, and trains them `max_uses` times (epochs), `round_size`
rows per round.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lead_ray.select.selector import LeadSelector, RoundPlan

STATIC_SELECTORS = ("random", "full", "longest", "static_iu", "static_ifd")
SELECTORS = ("lead", *STATIC_SELECTORS)


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


class StaticSelector(LeadSelector):
    """LeadSelector's bookkeeping (uses, losses, round log, state) with a fixed plan instead of the bandit."""

    def __init__(self, idu0: np.ndarray, arm: np.ndarray, group: np.ndarray, *, scores: np.ndarray,
                 round_size: int, **params: Any):
        super().__init__(idu0, arm, group, **{**params, "uniform_arms": True})
        selectable = np.flatnonzero(self.arm >= 0)
        s = np.asarray(scores, dtype=np.float64)[selectable]
        self.order = selectable[np.lexsort((selectable, -s))][: self.budget]
        self.round_size = max(1, int(round_size))
        self.rounds_per_epoch = max(1, -(-len(self.order) // self.round_size))

    def next_round(self) -> RoundPlan | None:
        if self.plan is not None:
            return self.plan
        epoch, step = divmod(self.round, self.rounds_per_epoch)
        if epoch >= self.max_uses or len(self.order) == 0:
            self.stop_reason = "budget"
            return None
        ids = self.order[step * self.round_size : (step + 1) * self.round_size]
        self.uses[ids] += 1
        self.losses[ids] = np.nan
        self.plan = RoundPlan(self.round, self.arm[ids], ids, self.bandit.probabilities())
        return self.plan


def build_selector(columns: dict[str, np.ndarray], params: dict[str, Any]) -> LeadSelector:
    """LEAD or a static baseline over the enriched pool's columns (`id, arm, group, iu0`, and what it ranks by)."""
    params = dict(params)
    kind = params.pop("selector", "lead")
    round_size = params.pop("round_size", None)
    iu0 = np.asarray(columns["iu0"], dtype=np.float64)
    arm, group = np.asarray(columns["arm"], dtype=np.int64), np.asarray(columns["group"], dtype=np.int64)
    if kind == "lead":
        return LeadSelector(iu0, arm, group, **params)
    if round_size is None:
        round_size = int(np.ceil(params.get("sample_rate", 0.015) * int((arm >= 0).sum())))
    return StaticSelector(iu0, arm, group, scores=baseline_scores(kind, columns, params.get("seed", 0)),
                          round_size=round_size, **params)
