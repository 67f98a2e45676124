"""The round bookkeeping every selection strategy shares. Pure NumPy (no Ray, no torch).

Per row: its utility (IDU), how often it was trained (`uses`), and this round's loss from the training forward pass.
Per run: the unique-sample budget, `max_uses`, `max_rounds`, the round log and per-round stats, and each round's record
(what persists). A strategy only decides which rows a round trains (`next_round`).

The per-row state is what a 100M-row pool keeps in the actor's memory, so each column takes the smallest type its
range allows (`small_int`): IDU in float64 (8 bytes: rankings must not change), arm, group and uses in the fewest
bytes that hold them, a demoted flag (1), and a reference loss only with `utility: learnable` and a first loss only
with `demote_after` (8 each). This round's losses are kept for its rows only. With the LEAD selector's arm
members (int32 ids) that is about 17 bytes per row. A round's cost follows the round, not the pool: the unique
count and each arm's open rows (uses below max_uses, not demoted; and of those, the ones already used) are kept up
to date as rounds start and rows are demoted, so no step of a round passes over the whole pool (only
`group_budget: proportional` still does).

Every strategy keeps IDU up to date the same way (so the report compares like with like): the trained rows' IDU
is smoothed towards L_t + ΔL′, where ΔL′ is a first-order loss change in nats from the round's mean gradient ḡ and
displacement u (`end_round(grad, step)`, `idu.loss_change_correction`). With `reference_loss` (utility: learnable)
utility is the loss minus a per-row reference loss, RHO-LOSS's reducible loss, so rows whose loss cannot fall
(wrong answers) stop looking useful. Row ids are dense positions 0..N-1; rows that may not be selected (held-out
rows, excluded rows) have arm = -1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lead_ray.config.fields import check_section
from lead_ray.select.coarse_to_fine import largest_remainder
from lead_ray.select.idu import RoundDirection, loss_change_correction, smooth_idu
from lead_ray.select.params import SelectionParams

LOG_COLUMNS = ["round", "id", "arm", "group", "idu_before", "idu_after", "loss"]  # one row per (round, id)


def small_int(top: int) -> type[np.signedinteger]:
    """The smallest signed integer type that holds -1..top."""
    return next((t for t in (np.int8, np.int16, np.int32) if top <= np.iinfo(t).max), np.int64)


# What the SelectionService answers `next_round` (lead_ray/select/service.py): a RoundPlan, a Rescore, None (the
# run is over) or LOST. Types, not dicts, so that a renamed field fails where it is read, in a unit test.
@dataclass
class RoundPlan:
    """Train `ids` as round `round`."""

    round: int
    arms: np.ndarray  # arm chosen for each selected id
    ids: np.ndarray
    arm_probs: np.ndarray  # the distribution the arms were drawn from (uniform for strategies without a bandit)


@dataclass(frozen=True)
class Rescore:
    """Before round `round`, the workers score `ids` with the current model (`report_scores`), then ask again."""

    round: int
    ids: np.ndarray


@dataclass(frozen=True)
class Lost:
    """The answer of a service without state (new, or restarted by Ray after a crash) until `restore`."""


LOST = Lost()


@dataclass(frozen=True)
class RoundEnd:
    """What the SelectionService answers `end_round`: the round's stats, and how many rounds its journal now holds
    (rank 0 keeps that count in the round checkpoint)."""

    stats: dict[str, Any]
    rounds: int


class RoundBook:
    """Utility store, uses, budget and round log; subclasses implement `next_round`."""

    def __init__(self, iu0: np.ndarray, arm: np.ndarray, group: np.ndarray, *,
                 reference_loss: np.ndarray | None = None, **params: Any):
        p = self.params = SelectionParams(**params)
        n = len(iu0)
        if not (len(arm) == len(group) == n):
            raise ValueError("iu0, arm and group must have the same length")
        if arm.max(initial=-1) >= p.num_arms:
            raise ValueError(f"arm ids must be < num_arms={p.num_arms}")
        # what the maths needs, against the config's own ranges and choices (the pure selector also takes, e.g.,
        # 0 rounds or a sample rate of 0: one row per cell)
        check_section(p, keys=("smoothing", "gamma", "arm_reference", "quota", "arm_allocation", "group_budget",
                               "utility", "truncate_top"))
        self.reference = None if reference_loss is None else np.asarray(reference_loss, dtype=np.float64)
        if self.reference is not None and self.reference.shape != (n,):
            raise ValueError("reference_loss must have one value per row")
        self.idu = np.array(iu0, dtype=np.float64)
        if self.reference is not None:
            self.idu -= self.reference
        num_groups = int(np.max(group, initial=-1)) + 1
        self.arm = np.asarray(arm).astype(small_int(p.num_arms))
        self.group = np.asarray(group).astype(small_int(num_groups))
        self.uses = np.zeros(n, dtype=small_int(p.max_uses))  # never above max_uses: only rows below it are eligible
        # each row's loss at its first use, for demote_after only
        self.first_loss = np.full(n, np.nan) if p.demote_after else None
        self.demoted = np.zeros(n, dtype=bool)  # rows whose loss did not fall: never again selected, budget refunded
        self.cell_size = np.zeros((p.num_arms, max(num_groups, 1)), dtype=np.int64)  # rows per (arm, group)
        sel = self.arm >= 0
        np.add.at(self.cell_size, (self.arm[sel], self.group[sel]), 1)
        # group_budget: proportional: each task group's share of the unique budget (largest remainder, adds up to it)
        self.group_allowance = (largest_remainder(p.budget, self.cell_size.sum(axis=0))
                                if p.group_budget == "proportional" else None)
        self._count_rows()
        self.round = 0
        self.plan: RoundPlan | None = None
        self.losses = np.zeros(0)  # this round's reported L_t(x), aligned with plan.ids
        self._plan_order = np.zeros(0, dtype=np.int64)  # plan.ids' positions in id order, for `report`
        self.prev: RoundDirection | None = None  # the previous round's (ḡ, u)
        self.arm_round: dict[int, RoundDirection] = {}  # (ḡ, u) of the round each arm was last (or first) picked
        self.arm_round_of: dict[int, int] = {}  # ... and that round's index
        self.log: list[dict[str, np.ndarray]] = []
        self.round_stats: list[dict[str, Any]] = []
        self.stop_reason: str | None = None

    # the parameters the bookkeeping reads most, by name (SelectionParams is the one place they live)
    num_arms = property(lambda self: self.params.num_arms)
    budget = property(lambda self: self.params.budget)
    max_uses = property(lambda self: self.params.max_uses)
    max_rounds = property(lambda self: self.params.max_rounds)
    sample_rate = property(lambda self: self.params.sample_rate)

    def state_nbytes(self) -> int:
        """Bytes of per-row state this selector holds (what grows with the pool)."""
        arrays = (self.idu, self.arm, self.group, self.uses, self.demoted, self.reference, self.first_loss)
        return sum(a.nbytes for a in arrays if a is not None)

    # --- which rows a round may take -------------------------------------------------------------------------------

    def _count_rows(self) -> None:
        """The counts kept up to date round by round, from the whole state (at the start and after a restore)."""
        used, live = self.uses > 0, ~self.demoted
        self._num_unique = int((used & live).sum())
        open_ = (self.arm >= 0) & live & (self.uses < self.max_uses)
        self._open = np.bincount(self.arm[open_], minlength=self.num_arms)  # eligible before the budget is spent
        self._reusable = np.bincount(self.arm[open_ & used], minlength=self.num_arms)  # ... and after

    def _count_started(self, ids: np.ndarray, before: np.ndarray) -> None:
        """`ids` (distinct) were just used once more, from `before` uses."""
        live = ~self.demoted[ids]
        k, selectable = np.maximum(self.arm[ids], 0), live & (self.arm[ids] >= 0)
        first, full = selectable & (before == 0), selectable & (before + 1 == self.max_uses)
        count = lambda mask: np.bincount(k[mask], minlength=self.num_arms)  # noqa: E731
        self._open -= count(full)
        self._reusable += count(first & ~full) - count(full & (before > 0))
        self._num_unique += int((live & (before == 0)).sum())

    def _count_demoted(self, ids: np.ndarray) -> None:
        """`ids` (used, and live until now) were just demoted."""
        k, selectable = np.maximum(self.arm[ids], 0), self.arm[ids] >= 0
        open_ = np.bincount(k[selectable & (self.uses[ids] < self.max_uses)], minlength=self.num_arms)
        self._open -= open_  # demoted rows were used: they leave both counts
        self._reusable -= open_
        self._num_unique -= len(ids)

    @property
    def num_unique(self) -> int:
        """Unique rows trained, less the demoted ones (their budget is refunded)."""
        return self._num_unique

    def group_room(self) -> np.ndarray | None:
        """New rows each task group may still take under `group_budget: proportional` (None: no per-group cap)."""
        if self.group_allowance is None:
            return None
        used = (self.uses > 0) & ~self.demoted & (self.arm >= 0)
        return self.group_allowance - np.bincount(self.group[used], minlength=len(self.group_allowance))

    def eligible_mask(self) -> np.ndarray:
        """Rows a round may take: selectable, not demoted, used fewer than `max_uses` times, and, once the unique
        budget (or, with `group_budget`, their group's share of it) is spent, already used."""
        ok = np.zeros(len(self.arm), dtype=bool)
        ok[self.eligible_rows(np.flatnonzero(self.arm >= 0))] = True
        return ok

    def available_arms(self) -> np.ndarray:
        """Which arms hold an eligible row (`eligible_mask`), from the counts; with `group_budget: proportional`
        from the rows themselves."""
        if self.group_allowance is not None:
            ok = self.eligible_mask()
            return np.bincount(self.arm[ok], minlength=self.num_arms) > 0
        return (self._reusable if self.num_unique >= self.budget else self._open) > 0

    def any_eligible(self) -> bool:
        return bool(self.available_arms().any())

    def eligible_rows(self, rows: np.ndarray) -> np.ndarray:
        """The eligible ones of `rows` (selectable ids; see `eligible_mask`), reading only those rows."""
        uses = self.uses[rows]
        ok = (uses < self.max_uses) & ~self.demoted[rows]
        if self.num_unique >= self.budget:
            ok &= uses > 0
        room = self.group_room()
        if room is not None:
            ok &= (uses > 0) | (room[np.maximum(self.group[rows], 0)] > 0)
        return rows[ok]

    def stopped(self) -> bool:
        """Whether the run is over (and why, in `stop_reason`): budget spent, rounds used up, nothing eligible."""
        if self.stop_reason is None:
            spent = self.num_unique >= self.budget
            if spent and not self.params.reuse_after_budget:
                self.stop_reason = "budget"
            elif self.round >= self.max_rounds:
                self.stop_reason = "max_rounds"
            elif not self.any_eligible():  # with reuse_after_budget: every chosen row used max_uses times
                self.stop_reason = "budget" if spent else "no_eligible"
        return self.stop_reason is not None

    def within_budget(self, ids: np.ndarray, priority: np.ndarray) -> np.ndarray:
        """Mask of `ids` to train: all re-used ones, and of the new ones only the `priority`-best that still fit
        the unique-sample budget (the last round is cut, never the budget overshot)."""
        new = self.uses[ids] == 0
        room = self.budget - self.num_unique
        group_room = self.group_room()
        if new.sum() <= room and group_room is None:
            return np.ones(len(ids), dtype=bool)
        new_idx = np.flatnonzero(new)
        new_idx = new_idx[np.lexsort((ids[new_idx], -priority[ids[new_idx]]))]  # best first
        if group_room is not None:  # each group's best new rows up to its room
            g = self.group[ids[new_idx]]
            rank = np.zeros(len(g), dtype=np.int64)  # the position of each row among its group's new rows
            for k in np.unique(g):
                rank[g == k] = np.arange(int((g == k).sum()))
            new_idx = new_idx[rank < group_room[g]]
        keep = ~new
        keep[new_idx[:room]] = True
        return keep

    def next_round(self) -> RoundPlan | None:
        raise NotImplementedError

    def replay(self, plan: RoundPlan | None) -> None:
        """Redo the `next_round` that answered `plan` (None: the run was over), from the state it was asked in:
        planning is deterministic given the state, so the answer must be the same."""
        got = self.next_round()
        if (got is None) != (plan is None) or (got is not None and not np.array_equal(got.ids, plan.ids)):
            raise RuntimeError(f"round {self.round}: the replayed plan differs from the one the workers train on")

    def start_round(self, ids: np.ndarray, arms: np.ndarray, probs: np.ndarray) -> RoundPlan:
        ids, arms = np.asarray(ids, dtype=np.int64), np.asarray(arms, dtype=np.int64)
        if len(np.unique(ids)) != len(ids):
            raise ValueError("a round's ids must be distinct")
        before = self.uses[ids]
        self.uses[ids] += 1
        self._count_started(ids, before)
        self.losses = np.full(len(ids), np.nan)
        self._plan_order = np.argsort(ids, kind="stable")
        self.plan = RoundPlan(self.round, arms, ids, probs)
        return self.plan

    def arm_probs(self) -> np.ndarray:
        """The current distribution over arms (uniform for a strategy without a bandit)."""
        p = np.full(self.num_arms, 1.0 / self.num_arms)
        return p / p.sum()

    # --- what training reports -------------------------------------------------------------------------------------

    def rescore_request(self) -> np.ndarray | None:
        """Ids the workers must score with the current model before `next_round` (none by default)."""
        return None

    def report_scores(self, ids: np.ndarray, nll: np.ndarray) -> None:
        raise RuntimeError(f"{type(self).__name__} asks for no scores")

    def report(self, ids: np.ndarray, losses: np.ndarray) -> None:
        """Record per-sample mean response NLL from the training forward pass. Ids outside this round's plan (a
        late report of an ended round) change nothing."""
        if self.plan is None:
            return
        ids, losses = np.asarray(ids, dtype=np.int64), np.asarray(losses, dtype=np.float64)
        sorted_ids = self.plan.ids[self._plan_order]
        at = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
        mine = sorted_ids[at] == ids
        self.losses[self._plan_order[at[mine]]] = losses[mine]

    def end_round(self, grad: np.ndarray, step: np.ndarray) -> dict[str, Any]:
        """Apply ΔL′ and the IDU update to this round's samples; `arm_reward` gets each arm's mean IDU drop.

        `grad` is ḡ, the mean gradient of the training loss over the round's optimizer steps, and `step` is u, the
        round's parameter displacement, over the same parameters.
        """
        plan = self.plan
        if plan is None:
            raise RuntimeError("end_round() called without a round in progress")
        dtype = np.result_type(np.asarray(grad).dtype, np.float32)  # float32 from training stays float32
        direction = RoundDirection(np.asarray(grad, dtype=dtype), np.asarray(step, dtype=dtype))
        losses = self.losses
        seen = ~np.isnan(losses)
        before = self.idu[plan.ids].copy()
        stats: dict[str, Any] = {"round": plan.round, "num_selected": int(len(plan.ids))}
        stats["num_missing_losses"] = int((~seen).sum())
        arm_stats = []
        for k in np.unique(plan.arms):
            sel = (plan.arms == k) & seen
            correction, beta = 0.0, 0.0
            if self.params.use_correction:
                correction, beta = loss_change_correction(self.arm_round.get(int(k)), self.prev)
            ids_k = plan.ids[sel]
            observed = losses[sel] if self.reference is None else losses[sel] - self.reference[ids_k]
            self.idu[ids_k] = smooth_idu(self.idu[ids_k], observed, correction, self.params.smoothing)
            reward = float(np.mean(before[sel] - self.idu[ids_k])) if sel.any() else 0.0
            arm_stats.append({"arm": int(k), "reward": reward, **self.arm_reward(int(k), reward, plan),
                              "delta_l": correction, "beta": beta})
            if self.params.arm_reference == "last" or int(k) not in self.arm_round:
                self.arm_round[int(k)], self.arm_round_of[int(k)] = direction, plan.round
        self.prev = direction
        demoted = self.note_losses(plan.ids, losses)
        if self.params.demote_after:
            stats["num_demoted"] = demoted
        after = self.idu[plan.ids]
        self.log.append({"round": np.full(len(plan.ids), plan.round, dtype=np.int64), "id": plan.ids,
                         "arm": plan.arms, "group": self.group[plan.ids].astype(np.int64), "idu_before": before,
                         "idu_after": after, "loss": losses})
        g = direction.grad.astype(np.float64)
        stats.update(arms=arm_stats, arm_probs=plan.arm_probs.tolist(), grad_sq_norm=float(g @ g),
                     loss_change=direction.loss_change, num_unique=self.num_unique, budget=self.budget,
                     mean_loss=float(np.nanmean(losses)) if seen.any() else float("nan"))
        self.round_stats.append(stats)
        self.round += 1
        self.plan = None
        return stats

    def note_losses(self, ids: np.ndarray, losses: np.ndarray) -> int:
        """Keep each row's first loss; with `demote_after` = m, demote a row whose loss at its m-th (or a later)
        use is not below its first: a wrong answer's loss does not fall with training, a learnable row's does.
        Returns how many rows are demoted in all."""
        m = self.params.demote_after
        if not m:
            return 0
        first = np.isnan(self.first_loss[ids])
        self.first_loss[ids[first]] = losses[first]
        stuck = ~first & (self.uses[ids] >= m) & (losses >= self.first_loss[ids]) & ~self.demoted[ids]
        self.demoted[ids[stuck]] = True
        self._count_demoted(ids[stuck])
        return int(self.demoted.sum())

    def arm_reward(self, arm: int, reward: float, plan: RoundPlan) -> dict[str, Any]:
        """Hook for a strategy that learns from an arm's reward (LEAD's bandit); returns extra arm stats."""
        return {}

    # --- outputs and checkpoints -----------------------------------------------------------------------------------

    def selections(self) -> dict[str, np.ndarray]:
        """Every (round, id) trained so far, as columns."""
        if not self.log:
            return {k: np.zeros(0) for k in LOG_COLUMNS}
        return {k: np.concatenate([entry[k] for entry in self.log]) for k in LOG_COLUMNS}

    def strategy_state(self) -> dict[str, Any]:
        """What a strategy learns beyond the bookkeeping (LEAD: the bandit), as JSON values; saved every round."""
        return {}

    def load_strategy_state(self, state: dict[str, Any]) -> None:
        pass

    def round_record(self) -> dict[str, Any]:
        """The last ended round, everything resuming needs from it: its log rows (which give every row's uses and
        IDU), its (ḡ, u), its stats and which round each arm's reference direction is from. A run's state is its
        round records in order (`load_rounds`), so each round persists only what it changed."""
        if not self.log:
            raise RuntimeError("round_record() before any round ended")
        entry = self.log[-1]
        return {"arrays": {**{k: entry[k] for k in LOG_COLUMNS if k != "round"},
                           "grad": self.prev.grad, "step": self.prev.step},
                "meta": {"round": self.round - 1,
                         "stats": self.round_stats[-1], "arm_round": {str(k): r for k, r in self.arm_round_of.items()},
                         "strategy": self.strategy_state()}}

    def load_rounds(self, records: list[dict[str, Any]]) -> None:
        """Replay `round_record()`s, from round 0 in order, onto this freshly built selector."""
        if self.round or self.log:
            raise RuntimeError("load_rounds() needs a fresh selector")
        directions: dict[int, RoundDirection] = {}
        for rec in records:
            a, meta = rec["arrays"], rec["meta"]
            if meta["round"] != self.round:
                raise ValueError(f"selection state: expected round {self.round}, found round {meta['round']}")
            ids = np.asarray(a["id"], dtype=np.int64)
            self.uses[ids] += 1
            self.note_losses(ids, np.asarray(a["loss"], dtype=np.float64))
            self.idu[ids] = a["idu_after"]
            self.log.append({"round": np.full(len(ids), self.round, dtype=np.int64),
                             **{k: a[k] for k in LOG_COLUMNS if k != "round"}})
            self.round_stats.append(meta["stats"])
            directions[self.round] = self.prev = RoundDirection(a["grad"], a["step"])
            self.arm_round_of = {int(k): int(r) for k, r in meta["arm_round"].items()}
            directions = {r: d for r, d in directions.items() if r in self.arm_round_of.values() or r == self.round}
            self.load_strategy_state(meta["strategy"])
            self.round += 1
        self.arm_round = {k: directions[r] for k, r in self.arm_round_of.items()}
        self._count_rows()
