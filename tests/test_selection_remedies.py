"""The noise-robustness options of LEAD's selection (issue 25), by hand: proportional quota, loss truncation,
demotion with refund, proportional arm allocation, the IFD threshold. Expected values are worked out in the
comments, not by calling the code under test. Pure NumPy, no Ray: milliseconds."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from lead_ray.config import ConfigError, load_config
from lead_ray.select.coarse_to_fine import coarse_to_fine, group_quota, largest_remainder, top_k_per_group
from lead_ray.select.lead import LeadSelector
from lead_ray.select.params import SelectionParams
from lead_ray.select.strategies import build_selector, columns_needed
from tests.helpers import paper_selection

# these cases were worked out by hand on the paper's settings: a key a case sets overrides them
PaperSelector = partial(LeadSelector, **paper_selection())


def test_largest_remainder_by_hand() -> None:
    # 10 over weights 5:3:2 = 5, 3, 2 exactly; 7 over 1:1:1 = 2.33 each -> 2, 2, 2 and one more to the first
    assert largest_remainder(10, np.array([5, 3, 2])).tolist() == [5, 3, 2]
    assert largest_remainder(7, np.array([1, 1, 1])).tolist() == [3, 2, 2]
    # 4 over 0.1:0.45:0.45 -> 0.4, 1.8, 1.8 -> floors 0, 1, 1; remainders .4 .8 .8 -> the two .8s
    assert largest_remainder(4, np.array([0.1, 0.45, 0.45])).tolist() == [0, 2, 2]
    assert largest_remainder(3, np.zeros(2)).tolist() == [0, 0]


def test_proportional_quota_follows_group_sizes() -> None:
    # one arm with groups of 300, 100, 0 and 20 eligible rows; r = 0.015: floor would give 4, 1, 1 (empty group
    # too, though top-k finds no row there), 1 = one row per small cell; proportional: ⌊0.015·420⌋ = 6 rows,
    # 6·300/420 = 4.29, 1.43, 0, 0.29 -> floors 4, 1, 0, 0 and the one left to the largest remainder (1.43 -> 2)
    sizes = np.array([300, 100, 0, 20])
    assert group_quota("floor", sizes, sizes, 0.015).tolist() == [4, 1, 1, 1]
    assert group_quota("proportional", sizes, sizes, 0.015).tolist() == [4, 2, 0, 0]
    # a small arm still gives one row: ⌊0.015·20⌋ = 0 -> 1, to the only group
    assert group_quota("proportional", np.array([0, 20]), np.array([0, 20]), 0.015).tolist() == [0, 1]


def test_proportional_rounds_keep_their_size_after_the_budget() -> None:
    # 2 arms of 100 rows, r = 0.1: each round takes ⌊0.1·100⌋ = 10 rows of its arm. The budget (20 unique rows) is
    # spent after 2 rounds; with reuse_after_budget only used rows are eligible, 10 or 20 per arm, and a round must
    # still take 10 rows (sized by the arm, not by its eligible rows: that gave ⌊0.1·10⌋ = 1 row per round)
    n = 200
    sel = PaperSelector(np.linspace(1, 2, n), np.repeat([0, 1], 100), np.zeros(n, np.int64), num_arms=2, gamma=0.1,
                       smoothing=0.1, sample_rate=0.1, max_uses=3, budget=20, max_rounds=8, seed=0,
                       quota="proportional", reuse_after_budget=True)
    sizes = []
    while (plan := sel.next_round()) is not None:
        sizes.append(len(plan.ids))
        sel.report(plan.ids, np.ones(len(plan.ids)))
        sel.end_round(np.zeros(2), np.zeros(2))
    assert sel.num_unique == 20
    assert sizes and set(sizes) == {10}  # 20 rows × 3 uses = 60 samples = 6 rounds of 10, or 8 rounds (max_rounds)
    assert len(sizes) == 6


def test_group_budget_gives_each_group_its_share_whatever_arm_the_bandit_favours() -> None:
    # 300 rows: group 0 has 200 (all in arm 0), group 1 has 100 (all in arm 1). Budget 30 -> shares 20 and 10.
    # Arm 0's rows have the highest IDU, so rewards favour it; without the cap a round of arm 0 takes 20 rows
    # (⌊0.1·200⌋) and the budget can go anywhere. With the cap, group 0 gets exactly 20 unique rows and group 1
    # exactly 10, and once group 0 is full arm 0 has no new rows, so the bandit must draw arm 1.
    n = 300
    group = np.repeat([0, 1], [200, 100])
    iu0 = np.where(group == 0, 5.0, 1.0) + np.linspace(0, 0.1, n)
    for seed in range(5):
        sel = PaperSelector(iu0, group.copy(), group, num_arms=2, gamma=0.1, bandit_lr=5.0, sample_rate=0.1,
                           max_uses=1, budget=30, max_rounds=100, seed=seed, quota="proportional",
                           group_budget="proportional")
        assert sel.group_allowance.tolist() == [20, 10]
        while (plan := sel.next_round()) is not None:
            sel.report(plan.ids, np.zeros(len(plan.ids)))  # every loss falls to 0: large rewards for arm 0
            sel.end_round(np.zeros(2), np.zeros(2))
        used = np.flatnonzero(sel.uses > 0)
        assert sel.num_unique == 30
        assert np.bincount(group[used], minlength=2).tolist() == [20, 10]
        # within each group, the highest-IDU rows (the last ids of each group)
        assert set(used) == set(range(180, 200)) | set(range(290, 300))


def test_group_budget_trims_a_round_to_each_groups_room() -> None:
    # one arm, groups 0 and 1 of 50 rows each, budget 10 -> 5 each. r = 0.4: the first round asks for 40 rows
    # (20 per group by eligible rows) and keeps each group's 5 best; the budget is then spent in one round.
    n = 100
    group = np.repeat([0, 1], 50)
    sel = PaperSelector(np.arange(n, dtype=float), np.zeros(n, np.int64), group, num_arms=1, sample_rate=0.4,
                       budget=10, max_uses=1, max_rounds=5, quota="proportional", group_budget="proportional")
    plan = sel.next_round()
    assert sorted(plan.ids.tolist()) == [45, 46, 47, 48, 49, 95, 96, 97, 98, 99]
    assert sel.group_room().tolist() == [0, 0]


def test_truncation_skips_the_top_of_each_group() -> None:
    # group 0: scores 9, 8, 7, 6, 5 (ids 0-4); group 1: 4, 3 (ids 5, 6). Skip 2 and 0, take 2 and 1:
    # group 0 gives ids 2, 3 (scores 7, 6), group 1 gives id 5
    ids, groups = np.arange(7), np.array([0, 0, 0, 0, 0, 1, 1])
    scores = np.array([9.0, 8, 7, 6, 5, 4, 3])
    assert top_k_per_group(ids, groups, scores, np.array([2, 1]), np.array([2, 0])).tolist() == [2, 3, 5]
    # through coarse_to_fine: truncate_top 0.4 skips ⌊0.4·5⌋ = 2 of group 0 and ⌊0.4·2⌋ = 0 of group 1
    cell = np.array([[5, 2]])
    got, arm = coarse_to_fine(np.array([0]), [ids], groups, scores, cell, 0.4, truncate_top=0.4)
    # floor quota: max(1, ⌊0.4·5⌋) = 2 and max(1, ⌊0.4·2⌋) = 1
    assert got.tolist() == [2, 3, 5] and arm.tolist() == [0, 0, 0]


def test_truncation_leaves_enough_rows_for_the_quota() -> None:
    # 3 rows, quota 2, truncate 0.9 would skip 2: only 1 may be skipped so 2 are still taken (ids 1, 2)
    ids, groups, scores = np.arange(3), np.zeros(3, dtype=np.int64), np.array([3.0, 2, 1])
    got, _ = coarse_to_fine(np.array([0]), [ids], groups, scores, np.array([[3]]), 0.7, truncate_top=0.9)
    assert got.tolist() == [1, 2]


def _selector(**kw) -> LeadSelector:
    base = dict(num_arms=1, gamma=0.1, smoothing=1.0, sample_rate=0.5, max_uses=4, budget=3, max_rounds=20, seed=0)
    return PaperSelector(np.array([5.0, 4.0, 3.0, 2.0]), np.zeros(4, np.int64), np.zeros(4, np.int64),
                        **{**base, **kw})


def test_demotion_refunds_the_budget_and_skips_the_row() -> None:
    # quota ⌊0.5·4⌋ = 2: round 0 takes ids 0, 1 (IDU 5, 4). Their losses 5 and 4; b = 1, so IDU := loss.
    sel = _selector(demote_after=2)
    plan = sel.next_round()
    assert plan.ids.tolist() == [0, 1]
    sel.report(plan.ids, np.array([5.0, 4.0]))
    sel.end_round(np.zeros(2), np.zeros(2))
    assert sel.num_unique == 2 and sel.demoted.sum() == 0
    # round 1: IDU 5, 4, 3, 2 again -> ids 0, 1 (second use). Row 0's loss stays 5 (did not fall): demoted;
    # row 1's falls to 1: kept.
    plan = sel.next_round()
    assert plan.ids.tolist() == [0, 1]
    sel.report(plan.ids, np.array([5.0, 1.0]))
    stats = sel.end_round(np.zeros(2), np.zeros(2))
    assert stats["num_demoted"] == 1 and sel.demoted.tolist() == [True, False, False, False]
    # the refund: 1 unique row counts (row 1), so 2 new ones still fit in the budget of 3
    assert sel.num_unique == 1
    # round 2: eligible ids 1 (IDU 1), 2 (3), 3 (2): the top 2 are ids 2 and 3, both new, and row 0 never again
    plan = sel.next_round()
    assert plan.ids.tolist() == [2, 3]
    sel.report(plan.ids, np.array([3.0, 2.0]))
    sel.end_round(np.zeros(2), np.zeros(2))
    assert sel.num_unique == 3 and sel.next_round() is None and sel.stop_reason == "budget"


def test_demotion_state_comes_back_from_the_round_records() -> None:
    sel, records = _selector(demote_after=2, budget=4), []
    for losses in ([5.0, 4.0], [6.0, 1.0]):
        plan = sel.next_round()
        sel.report(plan.ids, np.array(losses))
        sel.end_round(np.zeros(2), np.zeros(2))
        records.append(sel.round_record())
    again = _selector(demote_after=2, budget=4)
    again.load_rounds(records)
    assert again.demoted.tolist() == sel.demoted.tolist() == [True, False, False, False]
    assert again.num_unique == sel.num_unique == 1
    assert np.array_equal(again.next_round().ids, sel.next_round().ids)


def test_proportional_allocation_plays_every_arm_by_its_probability() -> None:
    # 2 arms of 100 rows each, one group; r = 0.1 -> a round of ⌊0.1·200⌋ = 20 rows; p = 0.5, 0.5 -> 10 and 10
    n = 200
    arm = np.repeat([0, 1], 100)
    sel = PaperSelector(np.linspace(1, 2, n), arm, np.zeros(n, np.int64), num_arms=2, gamma=0.1, smoothing=0.1,
                       sample_rate=0.1, max_uses=4, budget=100, max_rounds=5, seed=0, quota="proportional",
                       arm_allocation="proportional")
    plan = sel.next_round()
    assert np.bincount(plan.arms, minlength=2).tolist() == [10, 10]
    # the top IDU of each arm: arm 0 ids 90-99, arm 1 ids 190-199
    assert sorted(plan.ids.tolist()) == [*range(90, 100), *range(190, 200)]
    sel.report(plan.ids, np.where(plan.ids < 100, 0.0, 2.0))  # arm 0's loss fell more: its reward is higher
    stats = sel.end_round(np.zeros(2), np.zeros(2))
    # rewards (b = 0.1): mean of 0.1·(IDU - loss): arm 0 over ids 90-99, arm 1 over ids 190-199
    idu0 = np.linspace(1, 2, n)
    r0, r1 = (0.1 * (idu0[90:100] - 0.0)).mean(), (0.1 * (idu0[190:200] - 2.0)).mean()
    assert [a["reward"] for a in stats["arms"]] == pytest.approx([r0, r1])
    # scaled: first raw, then seen {r0, r1}: r1 is the minimum -> -1. Full information: log w += η·R̂ with η = γ/K
    eta = 0.1 / 2
    w = np.array([eta * r0, eta * -1.0])
    p = 0.9 * np.exp(w - w.max()) / np.exp(w - w.max()).sum() + 0.05
    np.testing.assert_allclose(sel.bandit.probabilities(), p, rtol=1e-12)
    # and the next round splits 20 rows by those probabilities (largest remainder)
    plan = sel.next_round()
    assert np.bincount(plan.arms, minlength=2).tolist() == largest_remainder(20, p).tolist()


def test_ifd_threshold_makes_rows_unselectable() -> None:
    cols = {"id": np.arange(4), "arm": np.zeros(4, np.int64), "group": np.zeros(4, np.int64),
            "iu0": np.array([4.0, 3, 2, 1]), "ifd": np.array([0.9, 0.5, 0.95, 0.2])}
    params = SelectionParams(budget=4, num_arms=1, sample_rate=1.0, ifd_max=0.92)
    assert "ifd" in columns_needed(params)
    sel = build_selector(cols, params)
    assert sel.next_round().ids.tolist() == [0, 1, 3]  # id 2 (IFD 0.95 > 0.92) is out


@pytest.mark.parametrize("override, key", [
    ("quota=ceil", "quota"), ("quota=floor arm_allocation=proportional", "arm_allocation"), ("truncate_top=1.0", "truncate_top"),
    ("demote_after=1", "demote_after"), ("ifd_max=0", "ifd_max"), ("group_budget=equal", "group_budget"),
])
def test_remedy_options_are_validated(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_config(None, override.split())


def test_diagnostics_by_hand() -> None:
    from lead_ray.select.screen import kl_divergence, selection_diagnostics

    # pool a, a, b, b (selectable), c (held out: arm -1). Picks: ids 0, 0, 1 (a twice as a sample, once unique)
    source = np.array(["a", "a", "b", "b", "c"])
    arm, group = np.array([0, 0, 1, 1, -1]), np.array([0, 1, 0, 1, 0])
    noisy = np.array([True, False, False, False, False])
    d = selection_diagnostics(np.array([0, 0, 1]), source, arm, group, noisy)
    # unique picks 0, 1: both a -> mix (1, 0) against the pool's (0.5, 0.5): KL = 1·ln(1/0.5) = ln 2
    assert d["source_kl"] == pytest.approx(np.log(2))
    assert d["source_coverage"] == 0.5  # a of {a, b}
    assert d["cell_coverage"] == 0.5  # cells (0,0), (0,1) of the four selectable ones
    assert d["noisy_share_unique"] == 0.5 and d["noisy_share_trained"] == pytest.approx(2 / 3)
    assert kl_divergence(np.array(["a", "b"]), np.array(["a", "b", "a", "b"])) == 0.0


def test_dry_run_spends_the_budget_and_nothing_more() -> None:
    from lead_ray.select.screen import arm_probability_trace, decaying_loss, dry_run

    rng = np.random.default_rng(0)
    n = 1000
    iu0, arm, group = rng.random(n) * 3, rng.integers(0, 7, n), rng.integers(0, 6, n)
    for kw in ({}, {"quota": "proportional", "arm_allocation": "proportional", "truncate_top": 0.1}):
        sel = dry_run(PaperSelector(iu0, arm, group, num_arms=7, budget=50, max_rounds=1000, **kw),
                      decaying_loss(iu0))
        assert sel.stop_reason == "budget" and sel.num_unique == 50
        assert sel.uses.max() <= sel.max_uses
        trace = arm_probability_trace(sel)
        assert trace.shape == (sel.round, 7)
        np.testing.assert_allclose(trace.sum(axis=1), 1.0)


def test_the_paper_preset_sits_under_explicit_keys(tmp_path) -> None:
    from lead_ray.config import PRESETS

    cfg = load_config(None, ["preset=paper", "truncate_top=0.3"])
    assert cfg.selection.truncate_top == 0.3  # set explicitly: kept
    assert (cfg.selection.quota, cfg.selection.arm_allocation, cfg.selection.smoothing) == ("floor", "sample", 0.1)  # from the preset
    assert {k: cfg.get(k) for k in PRESETS["paper"] if k != "truncate_top"} == \
        {k: v for k, v in PRESETS["paper"].items() if k != "truncate_top"}
    # a saved config reloads to itself
    cfg.save(tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    with pytest.raises(ConfigError, match="preset"):
        load_config(None, ["preset=papers"])


def test_the_default_is_the_noise_robust_setting_and_the_paper_one_key_away() -> None:
    """The default that beat random on the untuned test pool (README "Selection quality") differs from the paper's
    settings in exactly three keys."""
    from lead_ray.config import PRESETS

    default, paper = load_config(None, []), load_config(None, ["preset=paper"])
    assert {k for k in PRESETS["paper"] if default.get(k) != paper.get(k)} == {"quota", "truncate_top", "arm_by"}
    assert [default.get(k) for k in ("quota", "truncate_top", "arm_by")] == ["proportional", 0.5, "ifd_in_group"]
    assert [paper.get(k) for k in ("quota", "truncate_top", "arm_by")] == ["floor", 0.0, "ifd"]


def test_reference_split_is_a_seeded_share_of_the_train_rows() -> None:
    from lead_ray.prep.prepare import reference_split

    train = np.array([True] * 90 + [False] * 10)
    a, b = reference_split(train, 0.1, 0), reference_split(train, 0.1, 0)
    assert a.sum() == 9 and not a[90:].any() and np.array_equal(a, b)  # round(0.1 · 90), train rows only, seeded
    assert not np.array_equal(a, reference_split(train, 0.1, 1))
    assert reference_split(train, 0.001, 0).sum() == 1  # at least one row
    with pytest.raises(ConfigError, match="warmup_rows"):
        load_config(None, ["warmup_rows=reserved", "ifd_model=base"])
