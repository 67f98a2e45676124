"""The LEAD round loop over a utility store: EXP3 picks arms, per-group top-k by IDU picks samples.

Each round ends with the round's mean loss gradient ḡ and parameter displacement u (`end_round(grad, step)`), from
which ΔL′ is a loss change in nats (`idu.loss_change_correction`); the IDU of the trained rows is smoothed towards
L_t + ΔL′ and the chosen arm is rewarded with their mean IDU drop. With `reference_loss` (utility: learnable) the
utility is the loss minus a per-row reference loss, RHO-LOSS's reducible loss, so rows whose loss cannot fall
(wrong answers) stop looking useful.

Pure NumPy (no Ray, no torch) so selection can be unit-tested in milliseconds. Row ids are dense
positions 0..N-1 in the pool; rows that may not be selected (held-out eval rows, excluded rows) have arm = -1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lead_ray.select.bandit import Exp3
from lead_ray.select.idu import RoundDirection, loss_change_correction, smooth_idu

LOG_COLUMNS = ["round", "id", "arm", "group", "idu_before", "idu_after", "loss"]  # one row per (round, id)


@dataclass
class RoundPlan:
    round: int
    arms: np.ndarray  # arm chosen for each selected id
    ids: np.ndarray
    arm_probs: np.ndarray  # full EXP3 distribution this round


def top_k_per_group(
    ids: np.ndarray, groups: np.ndarray, scores: np.ndarray, quota: np.ndarray
) -> np.ndarray:
    """The `quota[g]` highest-scoring ids of each group g (ties broken by lower id), vectorised."""
    if len(ids) == 0:
        return ids
    order = np.lexsort((ids, -scores, groups))
    g_sorted = groups[order]
    first = np.searchsorted(g_sorted, g_sorted, side="left")
    rank = np.arange(len(order)) - first
    return ids[order[rank < quota[g_sorted]]]


class LeadSelector:
    """Utility store (idu, uses per id), the EXP3 bandit, and the per-round accounting."""

    def __init__(
        self,
        idu0: np.ndarray,
        arm: np.ndarray,
        group: np.ndarray,
        *,
        num_arms: int,
        gamma: float = 0.1,
        bandit_lr: float | None = None,
        smoothing: float = 0.1,
        sample_rate: float = 0.015,
        max_uses: int = 4,
        budget: int,
        max_rounds: int = 20,
        arms_per_round: int = 1,
        arm_reference: str = "last",
        uniform_arms: bool = False,
        use_correction: bool = True,
        reuse_after_budget: bool = False,
        reference_loss: np.ndarray | None = None,
        seed: int = 0,
    ):
        n = len(idu0)
        if not (len(arm) == len(group) == n):
            raise ValueError("idu0, arm and group must have the same length")
        if arm.max(initial=-1) >= num_arms:
            raise ValueError(f"arm ids must be < num_arms={num_arms}")
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        if arm_reference not in ("last", "first"):
            raise ValueError(f"arm_reference must be 'last' or 'first', got {arm_reference!r}")
        self.reference = np.zeros(n) if reference_loss is None else np.asarray(reference_loss, dtype=np.float64)
        if self.reference.shape != (n,):
            raise ValueError("reference_loss must have one value per row")
        self.idu = np.asarray(idu0, dtype=np.float64) - self.reference
        self.arm = np.asarray(arm, dtype=np.int64)
        self.group = np.asarray(group, dtype=np.int64)
        self.uses = np.zeros(n, dtype=np.int32)
        self.num_arms, self.smoothing, self.sample_rate = num_arms, smoothing, sample_rate
        self.max_uses, self.budget, self.max_rounds = max_uses, budget, max_rounds
        self.arms_per_round, self.arm_reference = arms_per_round, arm_reference
        self.uniform_arms, self.use_correction = uniform_arms, use_correction
        self.reuse_after_budget = reuse_after_budget
        self.bandit = Exp3(num_arms, 1.0 if uniform_arms else gamma, seed=seed, learning_rate=bandit_lr)
        num_groups = int(self.group.max(initial=-1)) + 1
        self.cell_size = np.zeros((num_arms, max(num_groups, 1)), dtype=np.int64)
        sel = self.arm >= 0
        np.add.at(self.cell_size, (self.arm[sel], self.group[sel]), 1)
        self.members = [np.flatnonzero(self.arm == k) for k in range(num_arms)]
        self.round = 0
        self.plan: RoundPlan | None = None
        self.losses = np.full(n, np.nan)  # this round's reported L_t(x)
        self.prev: RoundDirection | None = None  # the previous round's (ḡ, u)
        self.arm_round: dict[int, RoundDirection] = {}  # (ḡ, u) of the round each arm was last (or first) picked
        self.log: list[dict[str, np.ndarray]] = []
        self.round_stats: list[dict[str, Any]] = []
        self.stop_reason: str | None = None

    @property
    def num_unique(self) -> int:
        return int((self.uses > 0).sum())

    def eligible_mask(self) -> np.ndarray:
        """Rows a round may take: selectable, used fewer than `max_uses` times, and, once the unique budget is
        spent (only reachable with `reuse_after_budget`), already used."""
        ok = (self.arm >= 0) & (self.uses < self.max_uses)
        if self.num_unique >= self.budget:
            ok &= self.uses > 0
        return ok

    def next_round(self) -> RoundPlan | None:
        """Choose this round's arms and ids, or None (and set `stop_reason`) when the run is over."""
        if self.plan is not None:
            return self.plan  # asked again before end_round (e.g. after a restart): same answer
        if self.stopped():
            return None
        ok = self.eligible_mask()
        eligible = [m[ok[m]] for m in self.members]
        available = np.array([len(e) > 0 for e in eligible])
        arms, probs = self.bandit.choose(available, self.arms_per_round)
        chosen, chosen_arm = [], []
        for k in arms:
            e = eligible[int(k)]
            quota = np.maximum(1, np.floor(self.sample_rate * self.cell_size[k])).astype(np.int64)
            picked = top_k_per_group(e, self.group[e], self.idu[e], quota)
            chosen.append(picked)
            chosen_arm.append(np.full(len(picked), k, dtype=np.int64))
        ids, ids_arm = np.concatenate(chosen), np.concatenate(chosen_arm)
        keep = self.within_budget(ids, self.idu)
        return self.start_round(ids[keep], ids_arm[keep], probs)

    def stopped(self) -> bool:
        """Whether the run is over (and why, in `stop_reason`): budget spent, rounds used up, nothing eligible."""
        if self.stop_reason is None:
            spent = self.num_unique >= self.budget
            if spent and not self.reuse_after_budget:
                self.stop_reason = "budget"
            elif self.round >= self.max_rounds:
                self.stop_reason = "max_rounds"
            elif not self.eligible_mask().any():  # with reuse_after_budget: every chosen row used max_uses times
                self.stop_reason = "budget" if spent else "no_eligible"
        return self.stop_reason is not None

    def within_budget(self, ids: np.ndarray, priority: np.ndarray) -> np.ndarray:
        """Mask of `ids` to train: all re-used ones, and of the new ones only the `priority`-best that still fit
        the unique-sample budget (the last round is cut, never the budget overshot)."""
        new = self.uses[ids] == 0
        room = self.budget - self.num_unique
        if new.sum() <= room:
            return np.ones(len(ids), dtype=bool)
        new_idx = np.flatnonzero(new)
        keep = ~new
        keep[new_idx[np.lexsort((ids[new_idx], -priority[ids[new_idx]]))[:room]]] = True
        return keep

    def start_round(self, ids: np.ndarray, arms: np.ndarray, probs: np.ndarray) -> RoundPlan:
        self.uses[ids] += 1
        self.losses[ids] = np.nan
        self.plan = RoundPlan(self.round, arms, ids, probs)
        return self.plan

    def rescore_request(self) -> np.ndarray | None:
        """Ids the workers must score with the current model before `next_round` (LEAD needs none)."""
        return None

    def report_scores(self, ids: np.ndarray, nll: np.ndarray) -> None:
        raise RuntimeError(f"{type(self).__name__} asks for no scores")

    def report(self, ids: np.ndarray, losses: np.ndarray) -> None:
        """Record per-sample mean response NLL from the training forward pass."""
        self.losses[np.asarray(ids, dtype=np.int64)] = np.asarray(losses, dtype=np.float64)

    def end_round(self, grad: np.ndarray, step: np.ndarray) -> dict[str, Any]:
        """Apply ΔL′ and the IDU update to this round's samples, then reward the bandit.

        `grad` is ḡ, the mean gradient of the training loss over the round's optimizer steps, and `step` is u, the
        round's parameter displacement, over the same parameters.
        """
        plan = self.plan
        if plan is None:
            raise RuntimeError("end_round() called without a round in progress")
        dtype = np.result_type(np.asarray(grad).dtype, np.float32)  # float32 from training stays float32
        direction = RoundDirection(np.asarray(grad, dtype=dtype), np.asarray(step, dtype=dtype))
        losses = self.losses[plan.ids]
        seen = ~np.isnan(losses)
        before = self.idu[plan.ids].copy()
        stats: dict[str, Any] = {"round": plan.round, "num_selected": int(len(plan.ids))}
        stats["num_missing_losses"] = int((~seen).sum())
        arm_stats = []
        for k in np.unique(plan.arms):
            sel = (plan.arms == k) & seen
            correction, beta = 0.0, 0.0
            if self.use_correction:
                correction, beta = loss_change_correction(self.arm_round.get(int(k)), self.prev)
            ids_k = plan.ids[sel]
            observed = losses[sel] - self.reference[ids_k]
            self.idu[ids_k] = smooth_idu(self.idu[ids_k], observed, correction, self.smoothing)
            reward = float(np.mean(before[sel] - self.idu[ids_k])) if sel.any() else 0.0
            scaled = self.bandit.rescale(reward)
            if not self.uniform_arms:
                self.bandit.update(int(k), scaled, float(plan.arm_probs[k]))
            arm_stats.append({"arm": int(k), "reward": reward, "scaled_reward": scaled,
                              "delta_l": correction, "beta": beta})
            if self.arm_reference == "last" or int(k) not in self.arm_round:
                self.arm_round[int(k)] = direction
        self.prev = direction
        after = self.idu[plan.ids]
        self.log.append({"round": np.full(len(plan.ids), plan.round, dtype=np.int64), "id": plan.ids,
                         "arm": plan.arms, "group": self.group[plan.ids], "idu_before": before,
                         "idu_after": after, "loss": losses})
        g = direction.grad.astype(np.float64)
        stats.update(arms=arm_stats, arm_probs=plan.arm_probs.tolist(), grad_sq_norm=float(g @ g),
                     loss_change=direction.loss_change, num_unique=self.num_unique, budget=self.budget,
                     mean_loss=float(np.nanmean(losses)) if seen.any() else float("nan"))
        self.round_stats.append(stats)
        self.round += 1
        self.plan = None
        return stats

    def selections(self) -> dict[str, np.ndarray]:
        """Every (round, id) trained so far, as columns."""
        if not self.log:
            return {k: np.zeros(0) for k in LOG_COLUMNS}
        return {k: np.concatenate([entry[k] for entry in self.log]) for k in LOG_COLUMNS}

    def state(self) -> dict[str, Any]:
        """Everything needed to resume; NumPy arrays and plain Python values only (no pickling)."""
        return {
            "idu": self.idu.copy(), "uses": self.uses.copy(), "round": self.round,
            "prev": None if self.prev is None else _direction_state(self.prev),
            "arm_round": {k: _direction_state(v) for k, v in self.arm_round.items()},
            "bandit": self.bandit.state(), "log": [dict(e) for e in self.log],
            "round_stats": list(self.round_stats), "stop_reason": self.stop_reason,
            "plan": None if self.plan is None else {
                "round": self.plan.round, "arms": self.plan.arms.copy(), "ids": self.plan.ids.copy(),
                "arm_probs": self.plan.arm_probs.copy(), "losses": self.losses[self.plan.ids].copy()},
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.idu = np.asarray(state["idu"], dtype=np.float64).copy()
        self.uses = np.asarray(state["uses"], dtype=np.int32).copy()
        self.round = int(state["round"])
        self.prev = None if state["prev"] is None else RoundDirection(**state["prev"])
        self.arm_round = {int(k): RoundDirection(**v) for k, v in state["arm_round"].items()}
        self.bandit.load_state(state["bandit"])
        self.log = [dict(e) for e in state["log"]]
        self.round_stats = list(state["round_stats"])
        self.stop_reason = state["stop_reason"]
        self.losses[:] = np.nan
        plan = state.get("plan")
        self.plan = None if plan is None else RoundPlan(int(plan["round"]), np.asarray(plan["arms"]),
                                                        np.asarray(plan["ids"]), np.asarray(plan["arm_probs"]))
        if self.plan is not None:  # a round in progress resumes with the losses it had already received
            self.losses[self.plan.ids] = plan["losses"]


def _direction_state(d: RoundDirection) -> dict[str, np.ndarray]:
    return {"grad": d.grad.copy(), "step": d.step.copy()}
