"""IDU maths from LEAD (arXiv 2505.07437): the ΔL′ loss-change correction and exponential smoothing.

ΔL′ is a first-order (Taylor) loss change, ∇L·Δθ, in nats, under any optimizer: each round contributes ḡ, the mean
gradient of the training loss over its optimizer steps, and u, its actual parameter displacement. Under plain SGD
with one step per round u = -ηḡ, and ΔL′ is exactly the paper's -η‖β*g_{t_k} + (1-β*)g_{t-1}‖². Taking g = Δθ/η
instead (an earlier reading) measures AdamW's step count and the parameter count, not the loss. Pure NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RoundDirection:
    """One round's mean loss gradient ḡ and parameter displacement u (the same parameters, in the same order)."""

    grad: np.ndarray
    step: np.ndarray

    def __post_init__(self) -> None:
        if np.shape(self.grad) != np.shape(self.step):
            raise ValueError(f"grad and step must have one shape, got {np.shape(self.grad)} and {np.shape(self.step)}")

    @property
    def loss_change(self) -> float:
        """⟨ḡ, u⟩: the round's own first-order loss change, in nats (negative when training lowered the loss)."""
        return float(np.dot(self.grad, self.step))


def optimal_beta(delta_k: float, delta_prev: float, cos: float) -> float:
    """β* that minimises ‖β g_k + (1-β) g_prev‖², clipped to [0, 1]; 0 when the denominator vanishes."""
    cross = np.sqrt(delta_k * delta_prev) * cos
    denom = delta_k + delta_prev - 2.0 * cross
    if denom <= 1e-12 * (delta_k + delta_prev):  # parallel vectors (up to rounding) or zero vectors
        return 0.0
    return float(np.clip((delta_prev - cross) / denom, 0.0, 1.0))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine between two gradient vectors (0 if either is zero)."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.clip(np.dot(a, b) / (na * nb), -1.0, 1.0))


def loss_change_correction(arm: RoundDirection | None, prev: RoundDirection | None) -> tuple[float, float]:
    """ΔL′_t = ⟨β*ḡ_{t_k} + (1-β*)ḡ_{t-1}, β*u_{t_k} + (1-β*)u_{t-1}⟩ in nats. Returns (ΔL′, β*).

    `arm` is the round the arm was last (or first) picked, None if the arm is new; `prev` the previous round,
    None in round 1, where ΔL′ = 0. β* minimises the combined gradient's norm, from δ = ‖ḡ‖² and the cosine.
    """
    if prev is None:
        return 0.0, 0.0
    if arm is None:
        return prev.loss_change, 0.0
    gk, gp = np.asarray(arm.grad, np.float64), np.asarray(prev.grad, np.float64)
    uk, up = np.asarray(arm.step, np.float64), np.asarray(prev.step, np.float64)
    beta = optimal_beta(float(gk @ gk), float(gp @ gp), cosine(gk, gp))
    # the bilinear form expanded, so no combined vector is built
    change = (beta**2 * float(gk @ uk) + beta * (1 - beta) * float(gk @ up + gp @ uk)
              + (1 - beta) ** 2 * float(gp @ up))
    return change, beta


def smooth_idu(idu: np.ndarray, losses: np.ndarray, correction: float, smoothing: float) -> np.ndarray:
    """IDU ← (1-b)·IDU + b·(L_t + ΔL′); `smoothing` is b, the weight on the new observation."""
    return (1.0 - smoothing) * idu + smoothing * (losses + correction)
