"""IDU maths from LEAD (arXiv 2505.07437): the ΔL′ loss-change correction and exponential smoothing.

Pure NumPy, so the formulas can be checked by hand in unit tests.
"""

from __future__ import annotations

import numpy as np


def optimal_beta(delta_k: float, delta_prev: float, cos: float) -> float:
    """β* that minimises ‖β g_k + (1-β) g_prev‖², clipped to [0, 1]; 0 when the denominator vanishes."""
    cross = np.sqrt(delta_k * delta_prev) * cos
    denom = delta_k + delta_prev - 2.0 * cross
    if denom <= 1e-12 * (delta_k + delta_prev):  # parallel vectors (up to rounding) or zero vectors
        return 0.0
    return float(np.clip((delta_prev - cross) / denom, 0.0, 1.0))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine between two gradient-proxy vectors (0 if either is zero)."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.clip(np.dot(a, b) / (na * nb), -1.0, 1.0))


def loss_change_correction(
    g_arm: np.ndarray | None, g_prev: np.ndarray | None, learning_rate: float
) -> tuple[float, float]:
    """ΔL′_t = -η‖β* g_{t_k} + (1-β*) g_{t-1}‖², in its δ/cosine form. Returns (ΔL′, β*).

    `g_arm` is the proxy gradient from the round the arm was last picked (None if the arm is new),
    `g_prev` the one from the previous round (None in round 1, where ΔL′ = 0).
    """
    if g_prev is None:
        return 0.0, 0.0
    delta_prev = float(np.dot(g_prev, g_prev))
    if g_arm is None:
        return -learning_rate * delta_prev, 0.0
    delta_k = float(np.dot(g_arm, g_arm))
    c = cosine(g_arm, g_prev)
    beta = optimal_beta(delta_k, delta_prev, c)
    cross = np.sqrt(delta_k * delta_prev) * c
    sq = beta**2 * delta_k + (1 - beta) ** 2 * delta_prev + 2 * beta * (1 - beta) * cross
    return float(-learning_rate * max(sq, 0.0)), beta


def smooth_idu(idu: np.ndarray, losses: np.ndarray, correction: float, smoothing: float) -> np.ndarray:
    """IDU ← (1-b)·IDU + b·(L_t + ΔL′); `smoothing` is b, the weight on the new observation."""
    return (1.0 - smoothing) * idu + smoothing * (losses + correction)
