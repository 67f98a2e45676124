"""LEAD's selection (`lead_ray.select.lead` over `rounds.RoundBook`, `coarse_to_fine`): by hand and by
property tests.

Expected values in the hand-worked tests are derived in the comments next to them (from the formulas in
docs/method.md); none is obtained by calling the code under test. No Ray, no torch: the file runs in seconds.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lead_ray.select.coarse_to_fine import top_k_per_group
from lead_ray.select.journal import decode_round, encode_round
from lead_ray.select.lead import LeadSelector
from lead_ray.select.rounds import RoundPlan
from tests.helpers import paper_selection

# these cases were worked out by hand on the paper's settings: a key a case sets overrides them
PaperSelector = partial(LeadSelector, **paper_selection())

STOP_REASONS = {"budget", "max_rounds", "no_eligible"}


def _end_sgd(sel: LeadSelector, displacement: np.ndarray, lr: float) -> dict[str, Any]:
    """End a round that took one SGD step of `displacement` = -η g (so ḡ = -displacement/η). The hand-worked values
    below were written for ΔL′ = -‖displacement‖²/η, which is -η‖g‖² for such a round."""
    return sel.end_round(-displacement / lr, displacement)


def _exp3_p(log_w: list[float], gamma: float) -> np.ndarray:
    """The doc's p_k = (1-γ) w_k / Σ w + γ/K, written out independently for the hand-worked checks."""
    w = [math.exp(x) for x in log_w]
    return np.array([(1 - gamma) * wk / sum(w) + gamma / len(w) for wk in w])


# ---------------------------------------------------------------------------------------------------------------
# top_k_per_group
# ---------------------------------------------------------------------------------------------------------------


def test_top_k_per_group_ties_by_lower_id() -> None:
    ids = np.array([10, 3, 7, 5, 1, 8, 2])
    groups = np.array([0, 1, 0, 0, 1, 1, 0])
    scores = np.array([1.0, 2.0, 3.0, 3.0, 2.0, 0.5, 1.0])
    # Group 0: 10(1.0) 7(3.0) 5(3.0) 2(1.0); quota 3 -> 5, 7 (both 3.0), then 10 vs 2 tie at 1.0 -> 2.
    # Group 1: 3(2.0) 1(2.0) 8(0.5); quota 1 -> 3 vs 1 tie at 2.0 -> 1.
    out = top_k_per_group(ids, groups, scores, np.array([3, 1]))
    assert sorted(out.tolist()) == [1, 2, 5, 7]
    # Quota 0 for group 0, 5 (more than its size) for group 1 -> only group 1, all of it.
    out = top_k_per_group(ids, groups, scores, np.array([0, 5]))
    assert sorted(out.tolist()) == [1, 3, 8]
    # Quota 1 each: group 0 -> 5 (tie with 7 at 3.0), group 1 -> 1.
    assert sorted(top_k_per_group(ids, groups, scores, np.array([1, 1])).tolist()) == [1, 5]
    assert len(top_k_per_group(ids[:0], groups[:0], scores[:0], np.array([1, 1]))) == 0


@settings(max_examples=200, deadline=None, database=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300), num_groups=st.integers(1, 12))
def test_top_k_per_group_equals_a_full_sort(seed: int, n: int, num_groups: int) -> None:
    """The partition-based cut equals the definition: sort every row by (group, -score, id), keep each group's
    first quota rows. Scores are drawn from few values, with -inf and NaN, so ties at the cut-off are common."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(10 * n)[:n]
    groups = rng.integers(0, num_groups, n)
    scores = rng.integers(0, 5, n).astype(np.float64)
    scores[rng.random(n) < 0.15] = np.nan  # a NaN utility ranks last, as -NaN does in the sort
    scores[rng.random(n) < 0.1] = -np.inf
    quota = rng.integers(0, 6, num_groups)
    order = np.lexsort((ids, -scores, groups))
    rank = np.arange(n) - np.searchsorted(groups[order], groups[order], side="left")
    want = ids[order[rank < quota[groups[order]]]]
    np.testing.assert_array_equal(top_k_per_group(ids, groups, scores, quota), want)


# ---------------------------------------------------------------------------------------------------------------
# LeadSelector, by hand
# ---------------------------------------------------------------------------------------------------------------

# 20 rows, 2 arms, 2 groups; rows 3 and 16 are held out (arm -1) and have the highest IDU.
#   (arm 0, group 0): ids 0 4 6 10 14   (5 rows, quota floor(0.5·5) = 2)
#   (arm 0, group 1): ids 2 8 12        (3 rows, quota floor(1.5) = 1)
#   (arm 1, group 0): ids 1 7 11 15 18 19 (6 rows, quota 3)
#   (arm 1, group 1): ids 5 9 13 17     (4 rows, quota 2)
HAND_ARM = np.array([0, 1, 0, -1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, -1, 1, 1, 1])
HAND_GROUP = np.array([0, 0, 1, 0, 0, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0])
HAND_IDU = np.array(
    [1.0, 2.0, 3.0, 9.0, 4.0, 1.5, 4.0, 2.0, 0.5, 3.5, 2.5, 0.2, 3.0, 2.8, 3.0, 5.0, 8.0, 0.1, 1.2, 2.0]
)
HAND_LOSS = {
    0: 0.5,
    1: 1.0,
    2: 1.0,
    4: 2.0,
    5: 1.0,
    6: 2.0,
    7: 1.5,
    8: 0.3,
    9: 2.5,
    10: 1.5,
    11: 0.2,
    12: 2.0,
    13: 2.3,
    14: 1.0,
    15: 4.5,
    17: 0.1,
    18: 1.2,
    19: 1.0,
}
# Round-1 picks.  arm 0: g0 IDU 0:1 4:4 6:4 10:2.5 14:3 -> {4, 6}; g1 2:3 8:.5 12:3 -> tie -> {2}.
#                 arm 1: g0 1:2 7:2 11:.2 15:5 18:1.2 19:2 -> 15, then 1 and 7 (tie with 19 at 2.0, lower ids);
#                        g1 5:1.5 9:3.5 13:2.8 17:.1 -> {9, 13}.
FIRST = {0: [2, 4, 6], 1: [1, 7, 9, 13, 15]}
# With max_uses = 1 the round-1 rows are spent; the same arm again takes the next best:
#   arm 0: g0 0:1 10:2.5 14:3 -> {14, 10}; g1 8:.5 12:3 -> {12}.   arm 1: g0 11 18 19 (all 3); g1 5 17 (both).
SECOND = {0: [10, 12, 14], 1: [5, 11, 17, 18, 19]}
# Round 1 (ΔL′ = 0, b = 0.1): after = 0.9·IDU + 0.1·L.
#   arm 0: 2: 2.7+.1 = 2.8, 4: 3.6+.2 = 3.8, 6: 3.8.  R = 0.1·mean(3-1, 4-2, 4-2) = 0.2.
#   arm 1: 1: 1.8+.1 = 1.9, 7: 1.8+.15 = 1.95, 9: 3.15+.25 = 3.4, 13: 2.52+.23 = 2.75, 15: 4.5+.45 = 4.95.
#          R = 0.1·mean(1, .5, 1, .5, .5) = 0.07.
R1_AFTER = {0: {2: 2.8, 4: 3.8, 6: 3.8}, 1: {1: 1.9, 7: 1.95, 9: 3.4, 13: 2.75, 15: 4.95}}
R1_REWARD = {0: 0.2, 1: 0.07}
# Round 1: one SGD step with η = 0.125 and g = [2, 0] (δ_1 = 4), so u_1 = -η g_1.  Round 2: either the arm is new or its
# g_{t_k} = g_1 = g_prev (identical, cos = 1 exactly): β = 0 and ΔL′ = ⟨g_1, u_1⟩ = -0.125·4 = -0.5.  after = 0.9·IDU + 0.1·L - 0.05.
R2_AFTER = {
    # same arm twice: arm 0's next rows. 10: 2.25+.15-.05 = 2.35, 12: 2.7+.2-.05 = 2.85, 14: 2.7+.1-.05 = 2.75.
    (0, 0): {10: 2.35, 12: 2.85, 14: 2.75},
    # arm 1's next rows. 5: 1.35+.1-.05 = 1.4, 11: .18+.02-.05 = .15, 17: .09+.01-.05 = .05, 18: 1.08+.12-.05 = 1.15,
    # 19: 1.8+.1-.05 = 1.85.
    (1, 1): {5: 1.4, 11: 0.15, 17: 0.05, 18: 1.15, 19: 1.85},
    # other arm: its round-1 rows, each 0.05 below the round-1 values above.
    (1, 0): {2: 2.75, 4: 3.75, 6: 3.75},
    (0, 1): {1: 1.85, 7: 1.9, 9: 3.35, 13: 2.7, 15: 4.9},
}
# R_2 = 0.1·mean(IDU - L + 0.5):  (0,0): 0.1·(1.5+1.5+2.5)/3 = 0.18333..; (1,1): 0.1·(1+.5+.5+.5+1.5)/5 = 0.08;
# (1,0): 0.1·2.5 = 0.25; (0,1): 0.1·(0.7+0.5) = 0.12.   Rescaled against {R_1, R_2}: -1 if R_2 < R_1 else +1.
R2_REWARD = {(0, 0): 0.55 / 3, (1, 1): 0.08, (1, 0): 0.25, (0, 1): 0.12}
R2_SCALED = {(0, 0): -1.0, (0, 1): -1.0, (1, 0): 1.0, (1, 1): 1.0}


def _hand_selector(seed: int) -> LeadSelector:
    return PaperSelector(
        HAND_IDU,
        HAND_ARM,
        HAND_GROUP,
        num_arms=2,
        gamma=0.1,
        smoothing=0.1,
        sample_rate=0.5,
        max_uses=1,
        budget=20,
        max_rounds=2,
        seed=seed,
    )


def _report(sel: LeadSelector, plan: RoundPlan) -> None:
    sel.report(plan.ids, np.array([HAND_LOSS[int(i)] for i in plan.ids]))


def test_selector_two_rounds_by_hand() -> None:
    combos: set[tuple[int, int]] = set()
    for seed in range(40):
        sel = _hand_selector(seed)
        # Round 1: uniform probabilities, one arm, the hand-predicted rows of that arm.
        plan = sel.next_round()
        assert plan is not None and plan.round == 0
        np.testing.assert_allclose(plan.arm_probs, [0.5, 0.5], rtol=1e-12)
        a1 = int(plan.arms[0])
        assert set(plan.arms.tolist()) == {a1}
        assert sorted(plan.ids.tolist()) == FIRST[a1]
        assert sel.next_round() is plan  # asking again before end_round gives the same plan
        _report(sel, plan)
        st1 = _end_sgd(sel, np.array([0.25, 0.0]), 0.125)
        for i, v in R1_AFTER[a1].items():
            assert sel.idu[i] == pytest.approx(v, rel=1e-12)
        (arm_st,) = st1["arms"]
        assert arm_st["arm"] == a1 and arm_st["delta_l"] == 0.0 and arm_st["beta"] == 0.0
        assert arm_st["reward"] == pytest.approx(R1_REWARD[a1], rel=1e-12)
        assert arm_st["scaled_reward"] == pytest.approx(R1_REWARD[a1], rel=1e-12)  # first reward: raw
        assert st1["grad_sq_norm"] == pytest.approx(4.0) and st1["num_unique"] == len(FIRST[a1])
        # Bandit: log w_{a1} += (0.1/2)·R_1/0.5 = 0.1·R_1.
        lw = [0.0, 0.0]
        lw[a1] += 0.1 * R1_REWARD[a1]
        p2 = _exp3_p(lw, 0.1)
        np.testing.assert_allclose(sel.bandit.probabilities(), p2, rtol=1e-12)

        # Round 2: ΔL′ = -0.5 with g_prev set.
        plan = sel.next_round()
        assert plan is not None and plan.round == 1
        np.testing.assert_allclose(plan.arm_probs, p2, rtol=1e-12)
        a2 = int(plan.arms[0])
        expected_ids = SECOND[a2] if a2 == a1 else FIRST[a2]
        assert sorted(plan.ids.tolist()) == expected_ids
        _report(sel, plan)
        st2 = _end_sgd(sel, np.array([0.0, 0.125]), 0.125)
        for i, v in R2_AFTER[(a1, a2)].items():
            assert sel.idu[i] == pytest.approx(v, rel=1e-12)
        (arm_st,) = st2["arms"]
        assert arm_st["delta_l"] == pytest.approx(-0.5, rel=1e-12) and arm_st["beta"] == 0.0
        assert arm_st["reward"] == pytest.approx(R2_REWARD[(a1, a2)], rel=1e-12)
        assert arm_st["scaled_reward"] == pytest.approx(R2_SCALED[(a1, a2)], rel=1e-12)
        assert st2["grad_sq_norm"] == pytest.approx(1.0)
        lw[a2] += 0.05 * R2_SCALED[(a1, a2)] / p2[a2]
        np.testing.assert_allclose(sel.bandit.probabilities(), _exp3_p(lw, 0.1), rtol=1e-12)

        # Untouched rows keep IDU_0; held-out rows were never picked; max_rounds = 2 ends the run.
        trained = set(expected_ids) | set(FIRST[a1])
        for i in set(range(20)) - trained:
            assert sel.idu[i] == HAND_IDU[i]
        assert sel.uses[3] == 0 and sel.uses[16] == 0
        assert sorted(np.flatnonzero(sel.uses).tolist()) == sorted(trained)
        assert sel.next_round() is None and sel.stop_reason == "max_rounds"
        sels = sel.selections()
        assert len(sels["id"]) == len(trained) and sorted(sels["id"].tolist()) == sorted(trained)
        combos.add((a1, a2))
    assert combos == {(0, 0), (0, 1), (1, 0), (1, 1)}  # every hand-worked branch was exercised


@pytest.mark.parametrize(
    "reference, dl3, beta3, after3",
    [
        # Every round is one SGD step with η = 0.25 (u = -η g), so ΔL′ = -0.25·‖β g_{t_k} + (1-β) g_prev‖².
        # Round 3, "first": g_{t_k} = g_1 = [2, 0], g_prev = g_2 = [0, 1]: β = 1/5, ‖[.4, .8]‖² = 0.8, ΔL′ = -0.2.
        #   row 0: 0.9·1.71 + 0.1·(1 - 0.2) = 1.619; row 1: 0.9·0.9 + 0.08 = 0.89.
        ("first", -0.2, 0.2, (1.619, 0.89)),
        # Round 3, "last": g_{t_k} = g_2 = g_prev = [0, 1] (cos = 1 exactly): β = 0, ΔL′ = -0.25·1 = -0.25.
        #   row 0: 1.539 + 0.075 = 1.614; row 1: 0.81 + 0.075 = 0.885.
        ("last", -0.25, 0.0, (1.614, 0.885)),
    ],
)
def test_selector_arm_reference_by_hand(
    reference: str, dl3: float, beta3: float, after3: tuple[float, float]
) -> None:
    # Row 0 in arm 0, row 1 in arm 1, row 2 held out; both arms every round; quota max(1, floor(0.015)) = 1.
    sel = PaperSelector(
        np.array([2.0, 1.0, 100.0]),
        np.array([0, 1, -1]),
        np.array([0, 0, 0]),
        num_arms=2,
        gamma=0.1,
        smoothing=0.1,
        max_uses=3,
        budget=10,
        max_rounds=3,
        arms_per_round=2,
        arm_reference=reference,
        seed=0,
    )
    grads = [(np.array([0.5, 0.0]), 0.25), (np.array([0.0, 0.25]), 0.25), (np.array([0.25, 0.25]), 0.25)]
    # g_1 = [2, 0] (δ 4), g_2 = [0, 1] (δ 1), g_3 = [1, 1].
    expected = [
        # Round 1: ΔL′ = 0. row 0: 0.9·2 + 0.1·1 = 1.9; row 1: 0.9·1 + 0.1·1 = 1.0.
        (0.0, 0.0, (1.9, 1.0)),
        # Round 2: g_{t_k} = g_1 = g_prev: β = 0, ΔL′ = -0.25·4 = -1. row 0: 0.9·1.9 + 0 = 1.71; row 1: 0.9.
        (-1.0, 0.0, (1.71, 0.9)),
        (dl3, beta3, after3),
    ]
    for t, ((g_slice, lr), (dl, beta, after)) in enumerate(zip(grads, expected)):
        plan = sel.next_round()
        assert plan is not None
        assert sorted(plan.ids.tolist()) == [0, 1]
        sel.report(np.array([0, 1]), np.array([1.0, 1.0]))
        stats = _end_sgd(sel, g_slice, lr)
        for arm_st in stats["arms"]:
            assert arm_st["delta_l"] == pytest.approx(dl, rel=1e-12, abs=1e-15)
            assert arm_st["beta"] == pytest.approx(beta, rel=1e-12, abs=1e-15)
        np.testing.assert_allclose(sel.idu, [after[0], after[1], 100.0], rtol=1e-12)
        if t == 0:
            # Rewards: arm 0: 2 - 1.9 = 0.1 (first, raw); arm 1: 1 - 1 = 0 -> seen {0.1, 0}: 2·0/0.1 - 1 = -1.
            assert [a["reward"] for a in stats["arms"]] == pytest.approx([0.1, 0.0], abs=1e-12)
            assert [a["scaled_reward"] for a in stats["arms"]] == pytest.approx([0.1, -1.0], abs=1e-12)
            # log w_0 += 0.05·0.1/0.5 = 0.01; log w_1 += 0.05·(-1)/0.5 = -0.1 -> relative [0.11, 0].
            np.testing.assert_allclose(sel.bandit.probabilities(), _exp3_p([0.11, 0.0], 0.1), rtol=1e-12)
    assert sel.next_round() is None and sel.stop_reason == "max_rounds"
    assert sel.uses.tolist() == [3, 3, 0]


def test_selector_budget_trim_by_hand() -> None:
    # One arm, one group, IDU [1, 5, 3, 5, 2, 3]; quota floor(0.5·6) = 3; budget 4; b = 1 (IDU := L + ΔL′).
    sel = PaperSelector(
        np.array([1.0, 5.0, 3.0, 5.0, 2.0, 3.0]),
        np.zeros(6, dtype=np.int64),
        np.zeros(6, dtype=np.int64),
        num_arms=1,
        smoothing=1.0,
        sample_rate=0.5,
        max_uses=2,
        budget=4,
        max_rounds=10,
    )
    plan = sel.next_round()
    assert plan is not None
    # Top 3: 1 (5), 3 (5), then 2 vs 5 tie at 3 -> 2.
    assert sorted(plan.ids.tolist()) == [1, 2, 3]
    sel.report(np.array([1, 2, 3]), np.array([10.0, 0.0, 0.0]))
    _end_sgd(sel, np.zeros(2), 1.0)  # g = 0: ΔL′ stays 0 next round as well
    # IDU now [1, 10, 0, 0, 2, 3]; top 3: 1 (10), 5 (3), 4 (2). New rows 5 and 4 but room = 4 - 3 = 1:
    # keep the better new one, 5; row 1 (re-used) stays.
    plan = sel.next_round()
    assert plan is not None
    assert sorted(plan.ids.tolist()) == [1, 5]
    assert sel.num_unique == 4
    sel.report(plan.ids, np.zeros(len(plan.ids)))
    _end_sgd(sel, np.zeros(2), 1.0)
    assert sel.next_round() is None and sel.stop_reason == "budget"
    assert sel.uses.tolist() == [0, 2, 1, 1, 0, 1]


def test_selector_reuse_after_budget_by_hand() -> None:
    # As above, but the run goes on after the budget: only the 4 chosen rows stay eligible, up to max_uses each.
    sel = PaperSelector(np.array([1.0, 5.0, 3.0, 5.0, 2.0, 3.0]), np.zeros(6, dtype=np.int64),
                       np.zeros(6, dtype=np.int64), num_arms=1, smoothing=1.0, sample_rate=0.5, max_uses=2,
                       budget=4, max_rounds=10, reuse_after_budget=True)
    for losses in ([10.0, 0.0, 0.0], None):
        plan = sel.next_round()
        sel.report(plan.ids, np.array(losses) if losses else np.zeros(len(plan.ids)))
        _end_sgd(sel, np.zeros(2), 1.0)
    assert sel.num_unique == 4 and sel.uses.tolist() == [0, 2, 1, 1, 0, 1]  # as without reuse so far
    assert sel.eligible_mask().tolist() == [False, False, True, True, False, True]  # never a new row again
    # IDU [1, 0, 0, 0, 2, 0]: rows 2, 3, 5 (ties by lower id) are the 3 left; quota 3 takes them all.
    plan = sel.next_round()
    assert sorted(plan.ids.tolist()) == [2, 3, 5]
    sel.report(plan.ids, np.zeros(3))
    _end_sgd(sel, np.zeros(2), 1.0)
    assert sel.next_round() is None and sel.stop_reason == "budget"
    assert sel.num_unique == 4 and sel.uses.tolist() == [0, 2, 2, 2, 0, 2]  # budget × max_uses presentations


def test_selector_missing_losses_keep_idu() -> None:
    sel = PaperSelector(
        np.array([3.0, 2.0, 1.0]),
        np.zeros(3, dtype=np.int64),
        np.zeros(3, dtype=np.int64),
        num_arms=1,
        smoothing=0.5,
        sample_rate=1.0,
        budget=10,
        max_rounds=1,
    )
    plan = sel.next_round()
    assert plan is not None and sorted(plan.ids.tolist()) == [0, 1, 2]
    sel.report(np.array([1]), np.array([4.0]))  # only row 1 reported: 0.5·2 + 0.5·4 = 3
    stats = _end_sgd(sel, np.ones(3), 1.0)
    assert stats["num_missing_losses"] == 2
    np.testing.assert_allclose(sel.idu, [3.0, 3.0, 1.0], rtol=1e-12)
    assert stats["arms"][0]["reward"] == pytest.approx(-1.0)  # 2 - 3 over the one seen row


def test_selector_validation() -> None:
    z = np.zeros(3)
    zi = np.zeros(3, dtype=np.int64)
    with pytest.raises(ValueError):
        PaperSelector(z, zi[:2], zi, num_arms=1, budget=1)
    with pytest.raises(ValueError):
        PaperSelector(z, np.array([0, 1, 2]), zi, num_arms=2, budget=1)
    with pytest.raises(ValueError):
        PaperSelector(z, zi, zi, num_arms=1, budget=1, smoothing=0.0)
    with pytest.raises(ValueError):
        PaperSelector(z, zi, zi, num_arms=1, budget=1, arm_reference="middle")
    with pytest.raises(RuntimeError):
        PaperSelector(z, zi, zi, num_arms=1, budget=1).end_round(np.zeros(2), np.zeros(2))


def test_selector_no_eligible_and_zero_budget() -> None:
    arm = np.array([-1, -1, -1])
    sel = PaperSelector(np.zeros(3), arm, np.zeros(3, dtype=np.int64), num_arms=2, budget=3)
    assert sel.next_round() is None and sel.stop_reason == "no_eligible"
    sel = PaperSelector(
        np.zeros(3), np.zeros(3, dtype=np.int64), np.zeros(3, dtype=np.int64), num_arms=1, budget=0
    )
    assert sel.next_round() is None and sel.stop_reason == "budget"


def test_round_records_rebuild_the_state() -> None:
    """Every row's uses and IDU, the log, the stats, the bandit and each arm's reference (ḡ, u) come back from the
    round records alone; a record out of order is refused."""
    idu = np.linspace(0.0, 1.0, 40)
    arm, group = np.arange(40) % 3, np.arange(40) % 2
    kw: dict[str, Any] = dict(num_arms=3, sample_rate=0.2, budget=40, max_rounds=5, seed=7)
    a, records = PaperSelector(idu, arm, group, **kw), []
    for r in range(3):
        plan = a.next_round()
        a.report(plan.ids, np.full(len(plan.ids), 1.5 - 0.2 * r))
        a.end_round(np.full(4, 1.0 + r), np.full(4, -0.1 * (r + 1)))
        records.append(decode_round(encode_round(a.round_record())))
    b = PaperSelector(idu, arm, group, **kw)
    b.load_rounds(records)
    np.testing.assert_array_equal(b.uses, a.uses)
    np.testing.assert_array_equal(b.idu, a.idu)
    assert b.round == a.round == 3 and b.round_stats == a.round_stats
    assert b.bandit.state() == a.bandit.state() and b.arm_round_of == a.arm_round_of
    for k, d in a.arm_round.items():
        np.testing.assert_array_equal(b.arm_round[k].grad, d.grad)
        np.testing.assert_array_equal(b.arm_round[k].step, d.step)
    np.testing.assert_array_equal(b.prev.step, a.prev.step)
    assert b.next_round().ids.tolist() == a.next_round().ids.tolist()
    with pytest.raises(ValueError, match="expected round 0, found round 1"):
        PaperSelector(idu, arm, group, **kw).load_rounds(records[1:])


def test_replay_redoes_the_plan_from_the_state_before_it() -> None:
    """What a restarted SelectionService does: the state after round 0, then the plan of round 1 replayed, gives
    the selector that planned it (same uses, bandit and plan), and a different plan is refused."""
    idu = np.linspace(0.0, 1.0, 40)
    arm, group = np.arange(40) % 3, np.arange(40) % 2
    kw: dict[str, Any] = dict(num_arms=3, sample_rate=0.1, budget=40, max_rounds=5, seed=7)
    a = PaperSelector(idu, arm, group, **kw)
    first = a.next_round()
    a.report(first.ids, np.full(len(first.ids), 1.5))
    a.end_round(np.ones(4), -0.1 * np.ones(4))
    after_round = [a.round_record()]
    plan = a.next_round()
    answer = dataclasses.replace(plan)  # what the service sent: a copy
    b = PaperSelector(idu, arm, group, **kw)
    b.load_rounds(after_round)
    b.replay(answer)
    assert b.plan.ids.tolist() == plan.ids.tolist() and b.uses.tolist() == a.uses.tolist()
    assert b.bandit.state() == a.bandit.state()
    c = PaperSelector(idu, arm, group, **kw)
    c.load_rounds(after_round)
    with pytest.raises(RuntimeError, match="replayed plan differs"):
        c.replay(dataclasses.replace(answer, ids=answer.ids[::-1]))


# ---------------------------------------------------------------------------------------------------------------
# Property tests
# ---------------------------------------------------------------------------------------------------------------


@st.composite
def pools(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 500))
    num_arms = draw(st.integers(1, 6))
    num_groups = draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    arm = rng.integers(0, num_arms, n)
    arm[rng.random(n) < draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))] = -1
    group = rng.integers(0, num_groups, n)
    idu = rng.normal(2.0, 1.0, n)
    if draw(st.booleans()):
        idu = np.round(idu, 1)  # many ties
    kwargs = dict(
        num_arms=num_arms,
        gamma=draw(st.floats(0.01, 1.0)),
        smoothing=draw(st.floats(0.01, 1.0)),
        sample_rate=draw(st.floats(0.0, 0.5)),
        max_uses=draw(st.integers(1, 5)),
        budget=draw(st.integers(0, n + 10)),
        max_rounds=draw(st.integers(0, 25)),
        arms_per_round=draw(st.integers(1, num_arms + 1)),
        arm_reference=draw(st.sampled_from(["last", "first"])),
        uniform_arms=draw(st.booleans()),
        use_correction=draw(st.booleans()),
        seed=draw(st.integers(0, 10_000)),
    )
    return {
        "iu0": idu,
        "arm": arm,
        "group": group,
        "kwargs": kwargs,
        "stream": draw(st.integers(0, 2**32 - 1)),
    }


def _make(pool: dict[str, Any]) -> LeadSelector:
    return PaperSelector(pool["iu0"], pool["arm"], pool["group"], **pool["kwargs"])


def _round_inputs(stream: int, t: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Losses for every row, which rows report, g slice and learning rate for round t (a function of t only)."""
    rng = np.random.default_rng([stream, t])
    dim = 1 + stream % 4
    losses = rng.uniform(0.0, 10.0, n)
    reported = rng.random(n) > 0.1
    g_slice = rng.normal(0.0, 10.0 ** rng.uniform(-3, 1), dim)
    return losses, reported, g_slice, float(10.0 ** rng.uniform(-6, 0))


def _drive(sel: LeadSelector, stream: int, stop_after: int | None = None, records: list | None = None) -> None:
    """Run rounds to the end (or to `stop_after`); each ended round's record, through its journal encoding, is
    appended to `records`."""
    n = len(sel.idu)
    while stop_after is None or sel.round < stop_after:
        plan = sel.next_round()
        if plan is None:
            return
        losses, reported, g_slice, lr = _round_inputs(stream, sel.round, n)
        ids = plan.ids[reported[plan.ids]]
        sel.report(ids, losses[ids])
        _end_sgd(sel, g_slice, lr)
        if records is not None:
            records.append(decode_round(encode_round(sel.round_record())))


def _assert_same_selections(a: LeadSelector, b: LeadSelector) -> None:
    sa, sb = a.selections(), b.selections()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k])
    assert a.stop_reason == b.stop_reason
    np.testing.assert_array_equal(a.idu, b.idu)
    np.testing.assert_array_equal(a.uses, b.uses)
    np.testing.assert_array_equal(a.bandit.log_weights, b.bandit.log_weights)


@settings(max_examples=80, deadline=None, database=None)
@given(pool=pools())
def test_selector_invariants(pool: dict[str, Any]) -> None:
    sel = _make(pool)
    kw = pool["kwargs"]
    arm, group, n = pool["arm"], pool["group"], len(pool["arm"])
    k_arms, max_uses, budget = kw["num_arms"], kw["max_uses"], kw["budget"]
    gamma = 1.0 if kw["uniform_arms"] else kw["gamma"]
    cell = np.zeros((k_arms, int(group.max()) + 1), dtype=np.int64)
    for a, g in zip(arm, group):
        if a >= 0:
            cell[a, g] += 1
    selected_per_round: list[int] = []
    for _ in range(kw["max_rounds"] + 2):
        uses_before, idu_before = sel.uses.copy(), sel.idu.copy()
        eligible = (arm >= 0) & (uses_before < max_uses)
        available = np.array([bool(np.any(eligible & (arm == k))) for k in range(k_arms)])
        plan = sel.next_round()
        if plan is None:
            break
        assert sel.next_round() is plan
        ids, p = plan.ids, plan.arm_probs
        # Bandit distribution.
        assert p.sum() == pytest.approx(1.0, abs=1e-9)
        assert np.all(p[~available] == 0.0)
        if available.all():
            assert np.all(p >= gamma / k_arms - 1e-12)
        # Selection.
        assert len(np.unique(ids)) == len(ids)
        assert np.all(arm[ids] >= 0) and np.all(plan.arms == arm[ids])
        assert np.all(eligible[ids]) and np.all(available[plan.arms])
        assert len(np.unique(plan.arms)) <= kw["arms_per_round"]
        assert sel.num_unique <= budget
        assert np.all(sel.uses <= max_uses)
        np.testing.assert_array_equal(sel.uses - uses_before, np.isin(np.arange(n), ids).astype(np.int32))
        trimmed_possible = sel.num_unique >= budget
        if not trimmed_possible:
            assert len(np.unique(plan.arms)) == min(kw["arms_per_round"], int(available.sum()))
        for k in np.unique(plan.arms):
            for g in range(cell.shape[1]):
                in_cell = eligible & (arm == k) & (group == g)
                picked = np.zeros(n, dtype=bool)
                picked[ids] = True
                s, rest = in_cell & picked, in_cell & ~picked
                quota = max(1, math.floor(kw["sample_rate"] * cell[k, g]))
                assert s.sum() <= min(quota, in_cell.sum())
                if not trimmed_possible:  # no budget trimming: exactly the top `quota` of the cell by IDU
                    assert s.sum() == min(quota, in_cell.sum())
                    if s.any() and rest.any():
                        assert idu_before[s].min() >= idu_before[rest].max()
        # Training and the IDU update.
        losses, reported, g_slice, lr = _round_inputs(pool["stream"], sel.round, n)
        rewards_before = len(sel.bandit.rewards)
        max_delta = max([r["grad_sq_norm"] for r in sel.round_stats], default=0.0)
        rep = ids[reported[ids]]
        sel.report(rep, losses[rep])
        stats = _end_sgd(sel, g_slice, lr)
        selected_per_round.append(stats["num_selected"])
        assert stats["num_selected"] == len(ids)
        untouched = np.ones(n, dtype=bool)
        untouched[rep] = False
        np.testing.assert_array_equal(sel.idu[untouched], idu_before[untouched])
        b = kw["smoothing"]
        for j, arm_st in enumerate(stats["arms"]):
            k, dl = arm_st["arm"], arm_st["delta_l"]
            # ΔL′ = -η‖·‖² <= 0, up to the rounding of the δ/cos form (anti-parallel g's can make the norm ~0).
            assert dl <= 1e-12 * lr * max_delta and 0.0 <= arm_st["beta"] <= 1.0
            if len(selected_per_round) == 1 or not kw["use_correction"]:
                assert dl == 0.0
            rows = rep[arm[rep] == k]
            np.testing.assert_allclose(
                sel.idu[rows], (1 - b) * idu_before[rows] + b * (losses[rows] + dl), rtol=1e-9, atol=1e-9
            )
            if len(rows):
                assert arm_st["reward"] == pytest.approx(
                    float(np.mean(idu_before[rows] - sel.idu[rows])), rel=1e-9, abs=1e-12
                )
            if rewards_before + j == 0:  # the very first reward is passed on raw
                assert arm_st["scaled_reward"] == arm_st["reward"]
            else:
                assert -1.0 - 1e-12 <= arm_st["scaled_reward"] <= 1.0 + 1e-12
        assert np.all(np.isfinite(sel.idu)) and np.all(np.isfinite(sel.bandit.probabilities()))
    # The end of the run.
    assert sel.next_round() is None
    assert sel.stop_reason in STOP_REASONS
    assert sel.round == len(selected_per_round) <= kw["max_rounds"]
    assert len(sel.round_stats) == sel.round
    if sel.stop_reason == "budget":
        assert sel.num_unique >= budget
    elif sel.stop_reason == "max_rounds":
        assert sel.round == kw["max_rounds"] and sel.num_unique < budget
    else:
        assert sel.num_unique < budget and sel.round < kw["max_rounds"]
        assert not np.any((arm >= 0) & (sel.uses < max_uses))
    sels = sel.selections()
    assert len(sels["id"]) == sum(selected_per_round)
    ids_all = sels["id"].astype(np.int64)
    assert np.all(arm[ids_all] >= 0)
    np.testing.assert_array_equal(np.bincount(ids_all, minlength=n), sel.uses)
    assert len(np.unique(ids_all)) == sel.num_unique <= budget


@settings(max_examples=60, deadline=None, database=None)
@given(pool=pools(), split=st.integers(0, 25))
def test_selector_determinism_and_resume(pool: dict[str, Any], split: int) -> None:
    full = _make(pool)
    _drive(full, pool["stream"])
    # Same seed, same inputs: identical run.
    twin = _make(pool)
    _drive(twin, pool["stream"])
    _assert_same_selections(full, twin)
    # Interrupted between rounds, keep going: same as uninterrupted.
    part, records = _make(pool), []
    _drive(part, pool["stream"], stop_after=split, records=records)
    _drive(part, pool["stream"])
    _assert_same_selections(full, part)
    # A fresh selector given the round records so far continues to the same result.
    resumed = _make(pool)
    resumed.load_rounds(records)
    _drive(resumed, pool["stream"])
    _assert_same_selections(full, resumed)


def test_selector_long_run_large_rewards_stays_finite() -> None:
    rng = np.random.default_rng(5)
    n = 300
    sel = PaperSelector(
        rng.normal(0, 1e6, n),
        rng.integers(0, 7, n),
        rng.integers(0, 3, n),
        num_arms=7,
        sample_rate=0.01,
        max_uses=10**9,
        budget=10**9,
        max_rounds=2000,
        seed=1,
    )
    while (plan := sel.next_round()) is not None:
        # Losses swing by ±1e8, so raw rewards are huge; g is large as well.
        sel.report(plan.ids, rng.normal(0, 1e8, len(plan.ids)))
        _end_sgd(sel, rng.normal(0, 1e3, 4), 1e-5)
    assert sel.stop_reason == "max_rounds" and sel.round == 2000
    p = sel.bandit.probabilities()
    assert np.all(np.isfinite(p)) and p.sum() == pytest.approx(1.0, abs=1e-9)
    assert np.all(p >= 0.1 / 7 - 1e-12)
    assert np.all(np.isfinite(sel.bandit.log_weights)) and np.all(np.isfinite(sel.idu))


def test_per_row_state_is_at_most_25_bytes_and_selections_keep_int64_columns() -> None:
    """The state a 100M-row pool keeps in the actor: idu (8), arm and group and uses in their smallest types, the
    demoted flag, int32 arm members; a reference or first loss only when the options that read them are on. The
    outputs keep their int64 columns whatever the state's types."""
    n, arms, groups = 10_000, 7, 300
    rng = np.random.default_rng(0)
    pool = (rng.gamma(2.0, 1.0, n), rng.integers(-1, arms, n), rng.integers(0, groups, n))
    params = {"num_arms": arms, "gamma": 0.1, "smoothing": 0.1, "sample_rate": 0.02, "max_uses": 4, "budget": 500,
              "max_rounds": 50, "seed": 0}
    sel = LeadSelector(*pool, **params)
    # 8 (idu) + 1 (arm) + 2 (group) + 1 (uses) + 1 (demoted) + 4 × the selectable share (int32 members)
    selectable = (pool[1] >= 0).mean()
    assert sel.state_nbytes() == n * 13 + 4 * int((pool[1] >= 0).sum())
    assert sel.state_nbytes() / n == pytest.approx(13 + 4 * selectable) and sel.state_nbytes() / n <= 25
    assert (sel.arm.dtype, sel.group.dtype, sel.uses.dtype) == (np.int8, np.int16, np.int8)
    # the options that need more: a reference loss (utility: learnable) and a first loss (demote_after), 8 each
    more = LeadSelector(*pool, reference_loss=np.ones(n), **{**params, "utility": "learnable", "demote_after": 2})
    assert more.state_nbytes() == sel.state_nbytes() + 16 * n
    plan = sel.next_round()
    sel.report(plan.ids, np.full(len(plan.ids), 2.0))
    sel.end_round(np.zeros(4), np.zeros(4))
    out = sel.selections()
    assert all(out[k].dtype == np.int64 for k in ("round", "id", "arm", "group"))
    np.testing.assert_array_equal(out["group"], pool[2][plan.ids])


def test_reports_land_on_their_rows_in_any_order_and_late_ones_change_nothing() -> None:
    iu0, arm, group = np.array([5.0, 4.0, 3.0, 2.0]), np.zeros(4, dtype=np.int64), np.zeros(4, dtype=np.int64)
    sel = LeadSelector(iu0, arm, group, num_arms=1, gamma=0.1, smoothing=0.5, sample_rate=1.0, quota="proportional",
                       max_uses=2, budget=4, max_rounds=5, seed=0, use_correction=False)
    plan = sel.next_round()
    assert plan.ids.tolist() == [0, 1, 2, 3]
    sel.report(np.array([3, 1]), np.array([1.0, 3.0]))  # out of order, in two parts
    sel.report(np.array([2, 0, 99]), np.array([2.0, 4.0, 7.0]))  # 99 is not in the round: ignored
    sel.end_round(np.zeros(2), np.zeros(2))
    np.testing.assert_allclose(sel.idu, [4.5, 3.5, 2.5, 1.5])  # (1 - b)·iu0 + b·L, with b = 0.5
    sel.report(np.array([0]), np.array([100.0]))  # a late report, after its round ended
    assert sel.idu[0] == 4.5 and sel.selections()["loss"].tolist() == [4.0, 3.0, 2.0, 1.0]


@pytest.mark.parametrize("options", [
    {"max_uses": 1}, {"max_uses": 3}, {"max_uses": 2, "demote_after": 2}, {"max_uses": 3, "reuse_after_budget": True},
    {"max_uses": 2, "group_budget": "proportional", "demote_after": 2},
    {"max_uses": 2, "arm_allocation": "proportional", "quota": "proportional", "reuse_after_budget": True},
])
def test_counts_kept_round_by_round_equal_a_fresh_count(options: dict[str, Any]) -> None:
    """The unique count and the arms with an eligible row, kept up to date as rounds start and rows are demoted,
    equal their definitions over the whole state after every round, and after a restore from the round records."""
    n, arms = 400, 4
    rng = np.random.default_rng(3)
    pool = (rng.gamma(2.0, 1.0, n), rng.integers(-1, arms, n), rng.integers(0, 5, n))
    params = {"num_arms": arms, "gamma": 0.2, "smoothing": 0.3, "sample_rate": 0.05, "budget": 120,
              "max_rounds": 60, "seed": 1, **options}
    sel = LeadSelector(*pool, **params)

    def check(s: LeadSelector) -> None:
        assert s.num_unique == int(((s.uses > 0) & ~s.demoted).sum())
        truth = s.eligible_mask()
        np.testing.assert_array_equal(s.available_arms(), [truth[s.arm == k].any() for k in range(arms)])

    records = []
    while (plan := sel.next_round()) is not None:
        check(sel)
        losses = np.where(rng.random(len(plan.ids)) < 0.3, 3.0, 1.0 / sel.uses[plan.ids])  # some never fall
        sel.report(plan.ids, losses)
        sel.end_round(np.zeros(4), np.zeros(4))
        check(sel)
        records.append(decode_round(encode_round(sel.round_record())))
    assert sel.round > 3
    again = LeadSelector(*pool, **params)
    again.load_rounds(records)
    check(again)
    assert again.num_unique == sel.num_unique
