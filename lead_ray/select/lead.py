"""LEAD's selection (arXiv 2505.07437): an EXP3 bandit picks arms, coarse-to-fine top-k by IDU picks rows.

Each arm's reward is the mean IDU drop of its rows in the round (`RoundBook.end_round`), rescaled to [-1, 1] and fed
to EXP3. `uniform_arms` turns the bandit off (an ablation: arms drawn uniformly).

`arm_allocation: proportional` plays every arm each round with a share p_k of the round's rows (r·the available arms'
rows in all), so coverage does not hang on a few draws. Every arm's reward is then observed, and the weights follow the
full-information update (Hedge: no 1/p_k importance weight).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lead_ray.select.bandit import Exp3
from lead_ray.select.coarse_to_fine import coarse_to_fine, largest_remainder
from lead_ray.select.rounds import RoundBook, RoundPlan


class LeadSelector(RoundBook):
    def __init__(self, iu0: np.ndarray, arm: np.ndarray, group: np.ndarray, **params: Any):
        super().__init__(iu0, arm, group, **params)
        p = self.params
        self.bandit = Exp3(p.num_arms, 1.0 if p.uniform_arms else p.gamma, seed=p.seed, learning_rate=p.bandit_lr)
        # each arm's rows, as int32 ids below 2^31 rows (4 bytes per selectable row)
        id_type = np.int32 if len(self.arm) < 2**31 else np.int64
        self.members = [np.flatnonzero(self.arm == k).astype(id_type) for k in range(p.num_arms)]

    def next_round(self) -> RoundPlan | None:
        """Choose this round's arms and ids, or None (and set `stop_reason`) when the run is over."""
        if self.plan is not None:
            return self.plan  # asked again before end_round (e.g. after a restart): same answer
        if self.stopped():
            return None
        available = self.available_arms()
        p = self.params
        totals = None
        if p.arm_allocation == "proportional":
            probs = self.bandit.probabilities(available)
            arms = np.flatnonzero(probs > 0)
            size = max(1, int(np.floor(p.sample_rate * self.cell_size[available].sum())))
            totals = largest_remainder(size, probs[arms])
            arms = arms[totals > 0]
            totals = totals[totals > 0]
        else:
            arms, probs = self.bandit.choose(available, p.arms_per_round)
        eligible = {int(k): self.eligible_rows(self.members[int(k)]) for k in arms}  # only the arms played
        ids, ids_arm = coarse_to_fine(arms, eligible, self.group, self.idu, self.cell_size, p.sample_rate,
                                      quota=p.quota, truncate_top=p.truncate_top, arm_totals=totals)
        keep = self.within_budget(ids, self.idu)
        return self.start_round(ids[keep], ids_arm[keep], probs)

    def arm_probs(self) -> np.ndarray:
        return self.bandit.probabilities()

    def state_nbytes(self) -> int:
        return super().state_nbytes() + sum(m.nbytes for m in self.members)

    def arm_reward(self, arm: int, reward: float, plan: RoundPlan) -> dict[str, Any]:
        scaled = self.bandit.rescale(reward)
        if not self.params.uniform_arms:
            full_information = self.params.arm_allocation == "proportional"
            self.bandit.update(arm, scaled, 1.0 if full_information else float(plan.arm_probs[arm]))
        return {"scaled_reward": scaled}

    def strategy_state(self) -> dict[str, Any]:
        return {"bandit": self.bandit.state()}

    def load_strategy_state(self, state: dict[str, Any]) -> None:
        self.bandit.load_state(state["bandit"])
