"""EXP3 over arms, with min–max reward rescaling and log-weights so long runs cannot overflow.

The paper's update is w_k ← w_k·exp((γ/K)·R̂/p_k). Its step γ/K is small: with γ = 0.1 and K = 7, an arm that always
earns the best reward gains about 0.1 in log-weight per pick, so in 20 rounds (about 3 picks per arm) the
probabilities barely move. `learning_rate` sets the step separately from the exploration γ (default γ/K).
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_LOG_RATIO = 1000.0  # nats; exp(-1000) underflows to 0 in float64


class Exp3:
    def __init__(self, num_arms: int, gamma: float, seed: int = 0, learning_rate: float | None = None):
        if num_arms < 1:
            raise ValueError(f"num_arms must be >= 1, got {num_arms}")
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        if learning_rate is not None and not learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        self.num_arms = num_arms
        self.gamma = gamma
        self.learning_rate = gamma / num_arms if learning_rate is None else float(learning_rate)
        self.log_weights = np.zeros(num_arms)
        self.rewards: list[float] = []
        self.rng = np.random.default_rng(seed)

    def probabilities(self, available: np.ndarray | None = None) -> np.ndarray:
        """p_k = (1-γ) w_k / Σ w + γ/K, restricted to (and renormalised over) the available arms."""
        w = np.exp(self.log_weights - self.log_weights.max())
        p = (1.0 - self.gamma) * w / w.sum() + self.gamma / self.num_arms
        if available is not None:
            p = np.where(available, p, 0.0)
            if p.sum() == 0:
                raise ValueError("no arm is available")
        return p / p.sum()

    def choose(self, available: np.ndarray | None = None, num: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Draw `num` distinct arms; returns (arms, the probabilities they were drawn with)."""
        p = self.probabilities(available)
        num = min(num, int((p > 0).sum()))
        arms = self.rng.choice(self.num_arms, size=num, replace=False, p=p)
        return arms, p

    def rescale(self, reward: float) -> float:
        """Record a raw reward and map it to [-1, 1] by the running min and max (raw while < 2 seen)."""
        self.rewards.append(float(reward))
        if len(self.rewards) < 2:
            return float(reward)
        lo, hi = min(self.rewards), max(self.rewards)
        if hi == lo:
            return 0.0
        return float(2.0 * (reward - lo) / (hi - lo) - 1.0)

    def update(self, arm: int, scaled_reward: float, prob: float) -> None:
        """w_k ← w_k · exp(η · R̂ / p_k), η = `learning_rate` (the paper: γ/K), for the chosen arm only.

        Log-weights are kept within MAX_LOG_RATIO of the largest: exp(-MAX_LOG_RATIO) is 0 in float64, so the
        probabilities are exactly what the unbounded update gives, and a huge η (1e308) cannot make inf - inf."""
        step = self.learning_rate * scaled_reward / prob
        self.log_weights[arm] += np.clip(step, -MAX_LOG_RATIO, MAX_LOG_RATIO)
        self.log_weights = np.maximum(self.log_weights - self.log_weights.max(), -MAX_LOG_RATIO)

    def state(self) -> dict[str, Any]:
        return {
            "log_weights": self.log_weights.tolist(),
            "rewards": list(self.rewards),
            "rng": self.rng.bit_generator.state,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.log_weights = np.asarray(state["log_weights"], dtype=np.float64)
        self.rewards = [float(r) for r in state["rewards"]]
        self.rng.bit_generator.state = state["rng"]
