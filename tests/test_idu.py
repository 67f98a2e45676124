"""ΔL′, β* and IDU smoothing (`lead_ray.select.idu`), pure NumPy.

Expected values in the hand-worked tests are derived in the comments next to them (from the formulas in
docs/method.md); none is obtained by calling the code under test. No Ray, no torch: the file runs in seconds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lead_ray.select.idu import RoundDirection, cosine, loss_change_correction, optimal_beta, smooth_idu


def _v(*xs: float) -> np.ndarray:
    return np.array(xs, dtype=np.float64)


def _sgd(g: np.ndarray | None, lr: float) -> RoundDirection | None:
    """One plain-SGD step per round: the displacement is u = -η g."""
    return None if g is None else RoundDirection(np.asarray(g, dtype=np.float64), -lr * np.asarray(g, dtype=np.float64))


def _sgd_correction(g_arm: np.ndarray | None, g_prev: np.ndarray | None, lr: float) -> tuple[float, float]:
    """ΔL′ of rounds that each took one SGD step: must equal the paper's -η‖β*g_k + (1-β*)g_prev‖² (the expected
    values below are that formula, worked by hand)."""
    return loss_change_correction(_sgd(g_arm, lr), _sgd(g_prev, lr))


# ---------------------------------------------------------------------------------------------------------------
# ΔL′ and β*
# ---------------------------------------------------------------------------------------------------------------


def test_beta_clipped_to_zero_with_non_trivial_cosine() -> None:
    # g_arm = [3, 0], g_prev = [1, 1]: δ_k = 9, δ_prev = 2, cos = 3 / (3·√2) = 1/√2, √(δ_k δ_prev)·cos = √18/√2 = 3.
    # β* = (2 - 3) / (9 + 2 - 6) = -1/5 -> clipped to 0.
    assert cosine(_v(3, 0), _v(1, 1)) == pytest.approx(1 / math.sqrt(2), rel=1e-12)
    assert optimal_beta(9.0, 2.0, 1 / math.sqrt(2)) == 0.0
    # β = 0: ΔL′ = -η‖g_prev‖² = -0.1 · 2 = -0.2.
    dl, beta = _sgd_correction(_v(3, 0), _v(1, 1), 0.1)
    assert beta == 0.0
    assert dl == pytest.approx(-0.2, rel=1e-12)


def test_beta_clipped_to_one() -> None:
    # g_arm = [1, 1], g_prev = [3, 0]: δ_k = 2, δ_prev = 9, cross = 3; β* = (9 - 3) / (2 + 9 - 6) = 6/5 -> 1.
    # β = 1: ΔL′ = -η‖g_arm‖² = -0.1 · 2 = -0.2.
    assert optimal_beta(2.0, 9.0, 1 / math.sqrt(2)) == 1.0
    dl, beta = _sgd_correction(_v(1, 1), _v(3, 0), 0.1)
    assert beta == 1.0
    assert dl == pytest.approx(-0.2, rel=1e-12)


def test_beta_interior_orthogonal() -> None:
    # g_arm = [2, 0], g_prev = [0, 1]: δ_k = 4, δ_prev = 1, cos = 0; β* = (1 - 0) / (4 + 1 - 0) = 1/5.
    # β g_arm + (1-β) g_prev = [0.4, 0.8], ‖·‖² = 0.16 + 0.64 = 0.8;
    # δ/cos form: 0.04·4 + 0.64·1 + 2·0.2·0.8·0 = 0.16 + 0.64 = 0.8.  η = 0.5 -> ΔL′ = -0.4.
    assert optimal_beta(4.0, 1.0, 0.0) == pytest.approx(0.2, rel=1e-12)
    dl, beta = _sgd_correction(_v(2, 0), _v(0, 1), 0.5)
    assert beta == pytest.approx(0.2, rel=1e-12)
    assert dl == pytest.approx(-0.4, rel=1e-12)


def test_beta_interior_non_trivial_cosine() -> None:
    # g_arm = [1, 2], g_prev = [2, 0]: δ_k = 5, δ_prev = 4, dot = 2, cos = 2/(√5·2) = 1/√5, cross = √20/√5 = 2.
    # β* = (4 - 2) / (5 + 4 - 4) = 2/5.  β g_arm + (1-β) g_prev = [0.4 + 1.2, 0.8] = [1.6, 0.8], ‖·‖² = 3.2;
    # δ/cos form: 0.16·5 + 0.36·4 + 2·0.4·0.6·2 = 0.8 + 1.44 + 0.96 = 3.2.  η = 0.5 -> ΔL′ = -1.6.
    assert cosine(_v(1, 2), _v(2, 0)) == pytest.approx(1 / math.sqrt(5), rel=1e-12)
    assert optimal_beta(5.0, 4.0, 1 / math.sqrt(5)) == pytest.approx(0.4, rel=1e-12)
    dl, beta = _sgd_correction(_v(1, 2), _v(2, 0), 0.5)
    assert beta == pytest.approx(0.4, rel=1e-12)
    assert dl == pytest.approx(-1.6, rel=1e-12)


def test_beta_interior_3d() -> None:
    # g_arm = [1, 2, 2] (δ = 9), g_prev = [2, 1, 2] (δ = 9), dot = 2 + 2 + 4 = 8, cos = 8/9, cross = 9·8/9 = 8.
    # β* = (9 - 8) / (9 + 9 - 16) = 1/2.  0.5·g_arm + 0.5·g_prev = [1.5, 1.5, 2], ‖·‖² = 2.25 + 2.25 + 4 = 8.5;
    # δ/cos form: 0.25·9 + 0.25·9 + 2·0.25·8 = 8.5.  η = 2 -> ΔL′ = -17.
    dl, beta = _sgd_correction(_v(1, 2, 2), _v(2, 1, 2), 2.0)
    assert beta == pytest.approx(0.5, rel=1e-12)
    assert dl == pytest.approx(-17.0, rel=1e-12)


def test_correction_round_one_and_new_arm() -> None:
    # No previous round (g_prev None): ΔL′ = 0, β = 0, whatever g_arm is.
    assert _sgd_correction(_v(1, 2), None, 0.3) == (0.0, 0.0)
    assert _sgd_correction(None, None, 0.3) == (0.0, 0.0)
    # New arm (g_arm None), g_prev = [1, 1]: ΔL′ = -η δ_prev = -0.1 · 2 = -0.2, β = 0.
    dl, beta = _sgd_correction(None, _v(1, 1), 0.1)
    assert beta == 0.0
    assert dl == pytest.approx(-0.2, rel=1e-12)


def test_correction_identical_vectors_exact_cosine() -> None:
    # g = [3, 0]: δ_k = δ_prev = 9, cos = 1 exactly, denominator 9 + 9 - 2·9 = 0 -> β = 0; ΔL′ = -η·9 = -4.5.
    assert optimal_beta(9.0, 9.0, 1.0) == 0.0
    assert optimal_beta(0.0, 0.0, 0.0) == 0.0
    dl, beta = _sgd_correction(_v(3, 0), _v(3, 0), 0.5)
    assert beta == 0.0
    assert dl == pytest.approx(-4.5, rel=1e-12)


@pytest.mark.parametrize("g, expected", [([1.0, 1.0], -2.0), ([1.0, 2.0], -5.0), ([0.3, 0.7, 0.1], -0.59)])
def test_correction_identical_vectors_value(g: list[float], expected: float) -> None:
    # Identical vectors: ‖β g + (1-β) g‖² = ‖g‖² for every β, so ΔL′ = -η‖g‖² (η = 1): 2, 5, 0.09 + 0.49 + 0.01.
    dl, _ = _sgd_correction(np.array(g), np.array(g), 1.0)
    assert dl == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("g", [[1.0, 1.0], [1.0, 2.0], [0.3, 0.7, 0.1]])
def test_correction_identical_vectors_beta_zero(g: list[float]) -> None:
    # Denominator δ + δ - 2δ·cos(g, g) = 0 for identical vectors, so the doc sets β* = 0.
    _, beta = _sgd_correction(np.array(g), np.array(g), 1.0)
    assert beta == 0.0


def test_correction_zero_vectors() -> None:
    # g_prev = 0: minimiser of β²‖g_arm‖² is β = 0, ΔL′ = 0.  g_arm = 0: minimiser of (1-β)²‖g_prev‖² is β = 1, ΔL′ = 0.
    dl, beta = _sgd_correction(_v(1, 0), _v(0, 0), 1.0)
    assert (dl, beta) == (0.0, 0.0)
    dl, beta = _sgd_correction(_v(0, 0), _v(0, 2), 1.0)
    assert dl == 0.0 and beta == 1.0


vec = st.lists(st.floats(-10, 10, allow_nan=False), min_size=3, max_size=3).map(np.array)


@settings(max_examples=100, deadline=None, database=None)
@given(g_arm=vec, g_prev=vec, lr=st.floats(1e-4, 10))
def test_correction_is_minimum_over_beta(g_arm: np.ndarray, g_prev: np.ndarray, lr: float) -> None:
    # ΔL′ = -η·min_{β∈[0,1]} ‖β g_arm + (1-β) g_prev‖², and the returned β attains it.
    dl, beta = _sgd_correction(g_arm, g_prev, lr)
    assert 0.0 <= beta <= 1.0
    mix = beta * g_arm + (1 - beta) * g_prev
    scale = 1e-9 * (1 + float(g_arm @ g_arm) + float(g_prev @ g_prev)) * lr
    assert dl == pytest.approx(-lr * float(mix @ mix), abs=scale)
    grid = np.linspace(0.0, 1.0, 201)[:, None]
    norms = (((grid * g_arm + (1 - grid) * g_prev) ** 2).sum(axis=1)).min()
    assert -dl <= lr * norms + scale


def test_smooth_idu_by_hand() -> None:
    # b = 0.1, ΔL′ = -0.5: (0.9·1 + 0.1·(2 - 0.5), 0.9·2 + 0.1·(0 - 0.5), 0.9·3 + 0.1·(3 - 0.5)) = (1.05, 1.75, 2.95).
    out = smooth_idu(_v(1, 2, 3), _v(2, 0, 3), -0.5, 0.1)
    np.testing.assert_allclose(out, [1.05, 1.75, 2.95], rtol=1e-12)
    # b = 1: the new observation replaces the old value: L + ΔL′ = (1.5, -0.5, 2.5).
    np.testing.assert_allclose(smooth_idu(_v(1, 2, 3), _v(2, 0, 3), -0.5, 1.0), [1.5, -0.5, 2.5], rtol=1e-12)
    # b = 0.25, no correction: 0.75·4 + 0.25·8 = 5.
    np.testing.assert_allclose(smooth_idu(_v(4), _v(8), 0.0, 0.25), [5.0], rtol=1e-12)


