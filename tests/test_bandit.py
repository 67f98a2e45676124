"""EXP3 (`lead_ray.select.bandit`): probabilities, rescaling, updates, availability, long runs.

Expected values in the hand-worked tests are derived in the comments next to them (from the formulas in
docs/method.md); none is obtained by calling the code under test. No Ray, no torch: the file runs in seconds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from lead_ray.select.bandit import Exp3


def _exp3_p(log_w: list[float], gamma: float) -> np.ndarray:
    """The doc's p_k = (1-γ) w_k / Σ w + γ/K, written out independently for the hand-worked checks."""
    w = [math.exp(x) for x in log_w]
    return np.array([(1 - gamma) * wk / sum(w) + gamma / len(w) for wk in w])


# ---------------------------------------------------------------------------------------------------------------
# EXP3
# ---------------------------------------------------------------------------------------------------------------


def test_exp3_probabilities_by_hand() -> None:
    # K = 3, γ = 0.3, log w = [0, ln 2, 0] -> w/Σw = [1/4, 1/2, 1/4]; p = 0.7·[.25, .5, .25] + 0.1 = [.275, .45, .275].
    b = Exp3(3, 0.3)
    np.testing.assert_allclose(b.probabilities(), [1 / 3, 1 / 3, 1 / 3], rtol=1e-12)
    b.log_weights = np.array([0.0, math.log(2.0), 0.0])
    np.testing.assert_allclose(b.probabilities(), [0.275, 0.45, 0.275], rtol=1e-12)
    # Shifting all log-weights changes nothing (w is only defined up to a factor), even by a huge amount.
    b.log_weights = np.array([0.0, math.log(2.0), 0.0]) + 1e4
    np.testing.assert_allclose(b.probabilities(), [0.275, 0.45, 0.275], rtol=1e-12)
    # Arm 1 unavailable: [.275, 0, .275] renormalised -> [.5, 0, .5].
    np.testing.assert_allclose(b.probabilities(np.array([True, False, True])), [0.5, 0.0, 0.5], rtol=1e-12)
    with pytest.raises(ValueError):
        b.probabilities(np.array([False, False, False]))


def test_exp3_rescale_sequence_by_hand() -> None:
    b = Exp3(2, 0.1)
    assert b.rescale(5.0) == 5.0  # fewer than 2 rewards seen: raw
    assert b.rescale(5.0) == 0.0  # seen {5, 5}: max == min -> 0
    assert b.rescale(1.0) == pytest.approx(-1.0)  # lo 1, hi 5: 2·(1-1)/4 - 1
    assert b.rescale(3.0) == pytest.approx(0.0)  # 2·(3-1)/4 - 1
    assert b.rescale(9.0) == pytest.approx(1.0)  # lo 1, hi 9: 2·8/8 - 1
    assert b.rescale(2.0) == pytest.approx(-0.75)  # 2·1/8 - 1
    assert b.rewards == [5.0, 5.0, 1.0, 3.0, 9.0, 2.0]


def test_exp3_update_by_hand() -> None:
    b = Exp3(2, 0.2)
    # γ/K = 0.1.  update(0, R̂=1, p=0.5): log w_0 += 0.1·1/0.5 = 0.2 -> log w = [0.2, 0] ~ [0, -0.2].
    b.update(0, 1.0, 0.5)
    assert b.log_weights.max() == 0.0
    np.testing.assert_allclose(b.probabilities(), _exp3_p([0.2, 0.0], 0.2), rtol=1e-12)
    # p_0 = 0.8·1/(1 + e^-0.2) + 0.1
    assert b.probabilities()[0] == pytest.approx(0.8 / (1 + math.exp(-0.2)) + 0.1, rel=1e-12)
    # update(1, R̂=-1, p=0.25): log w_1 += 0.1·(-1)/0.25 = -0.4 -> [0.2, -0.4] ~ [0, -0.6].
    b.update(1, -1.0, 0.25)
    np.testing.assert_allclose(b.probabilities(), _exp3_p([0.6, 0.0], 0.2), rtol=1e-12)
    # update(1, R̂=1, p=0.1): log w_1 += 0.1·1/0.1 = 1 -> [0.6, 1.0] relative; arm 1 now favoured.
    b.update(1, 1.0, 0.1)
    assert b.log_weights.max() == 0.0
    np.testing.assert_allclose(b.probabilities(), _exp3_p([0.6, 1.0], 0.2), rtol=1e-12)
    assert b.probabilities()[1] > 0.5


def test_exp3_choose_respects_availability() -> None:
    b = Exp3(4, 0.5, seed=3)
    avail = np.array([True, False, True, False])
    seen: set[int] = set()
    for _ in range(200):
        arms, p = b.choose(avail, num=3)  # only 2 available: capped at 2, distinct
        assert len(arms) == 2 and len(set(arms.tolist())) == 2
        assert p[1] == 0.0 and p[3] == 0.0
        seen.update(arms.tolist())
    assert seen == {0, 2}


def test_exp3_validation() -> None:
    with pytest.raises(ValueError):
        Exp3(0, 0.1)
    with pytest.raises(ValueError):
        Exp3(2, 0.0)
    with pytest.raises(ValueError):
        Exp3(2, 1.5)


def test_exp3_long_run_does_not_overflow() -> None:
    rng = np.random.default_rng(0)
    for first_raw in (1e8, -1e8, None):
        b = Exp3(5, 0.1, seed=1)
        if first_raw is None:
            b.rescale(0.0)  # prime the running min/max so that every reward below is rescaled
        for i in range(5000):
            p = b.probabilities()
            arm = int(b.choose()[0][0])
            raw = (1e6 if arm == 0 else -1e6) * (1 + rng.random())
            if i == 0 and first_raw is not None:
                raw = first_raw  # the first reward is used raw: (γ/K)·1e8/0.2 = 1e7 on the log scale
            b.update(arm, b.rescale(raw), float(p[arm]))
            assert np.all(np.isfinite(b.log_weights)) and b.log_weights.max() == 0.0
        p = b.probabilities()
        assert np.all(np.isfinite(p)) and p.sum() == pytest.approx(1.0, abs=1e-12)
        assert np.all(p >= 0.1 / 5 - 1e-12)
        if first_raw is None:
            assert p[0] > 0.5  # arm 0 always had the best reward
    # A single arm rewarded with R̂ = 1 at p = 0.01 10,000 times: log w_0 gains 2 per step (40,000 in all).
    b = Exp3(5, 0.1)
    for _ in range(10_000):
        b.update(0, 1.0, 0.01)
    np.testing.assert_allclose(b.probabilities(), [0.9 + 0.02, 0.02, 0.02, 0.02, 0.02], rtol=1e-12)
    for _ in range(20_000):
        b.update(0, -1.0, 0.01)
    np.testing.assert_allclose(b.probabilities(), [0.02, 0.245, 0.245, 0.245, 0.245], rtol=1e-12)




def test_a_huge_learning_rate_saturates_instead_of_making_nan() -> None:
    """bandit_lr=1e308 once ended a run in "Probabilities contain NaN" (inf - inf in the log-weights). The step now
    saturates: a rewarded arm takes (1-γ) + γ/K, a punished one γ/K, as the unbounded update gives in float64."""
    gamma, k = 0.1, 4
    b = Exp3(k, gamma, learning_rate=1e308)
    b.update(2, 1.0, 0.25)
    assert b.probabilities() == pytest.approx([gamma / k] * 2 + [1 - gamma + gamma / k, gamma / k], abs=1e-15)
    b.update(2, -1.0, 0.925)  # now punished: back level with the others, none of them NaN
    p = b.probabilities()
    assert np.all(np.isfinite(b.log_weights)) and p == pytest.approx([1 / k] * k, abs=1e-15)
    b.update(0, 0.3, 0.25)
    assert b.probabilities()[0] == pytest.approx(1 - gamma + gamma / k, abs=1e-15)
