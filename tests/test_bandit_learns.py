"""Does the LEAD bandit learn? Simulated rounds through the real LeadSelector (pure NumPy, milliseconds).

Seven arms of equal size and equal initial IDU. Training an arm lowers the loss of its rows by a factor per round
it was trained: 0.3 for the planted arm, 0.97 for the others. The reward (mean IDU drop of the trained rows) is
then larger for the planted arm once it has been trained, and EXP3 must move probability towards it. With
identical arms (the loss falls with the total training, whatever the arm), the probabilities must stay near 1/7.

Measured with these simulations (20 seeds): under the paper's EXP3 (γ = 0.1, step γ/K), after 20 rounds the
planted arm is on top in half the seeds and its probability averages 0.165 (uniform: 0.143), so in a 20-round run
the paper's bandit barely moves; after 60 rounds it averages 0.30. `bandit_lr` = 0.05 reaches 0.52 in 40 rounds.
"""

from __future__ import annotations

import numpy as np
import pytest

from lead_ray.select.lead import LeadSelector

PLANTED = [0.3] + [0.97] * 6


def _simulate(decay: list[float], rounds: int, seed: int, bandit_lr: float | None = None,
              shared: bool = False) -> np.ndarray:
    """Arm probabilities after each round. `shared`: every arm's loss falls with the total rounds trained."""
    k, per = len(decay), 60
    n = k * per
    arm, group = np.repeat(np.arange(k), per), np.tile(np.arange(3), n // 3)
    sel = LeadSelector(np.full(n, 2.0), arm, group, num_arms=k, bandit_lr=bandit_lr, sample_rate=0.05,
                       max_uses=4, budget=n, max_rounds=rounds, seed=seed)
    trained, rng, probs = np.zeros(k), np.random.default_rng(seed + 100), []
    while (plan := sel.next_round()) is not None:
        a = int(plan.arms[0])
        times = trained.sum() if shared else trained[a]
        sel.report(plan.ids, 2.0 * decay[a] ** times * np.exp(rng.normal(0.0, 0.02, len(plan.ids))))
        sel.end_round(np.zeros(4), np.zeros(4))  # ΔL′ = 0: the reward is the loss drop alone
        trained[a] += 1
        p = sel.bandit.probabilities()
        assert p.sum() == pytest.approx(1.0) and (p >= 0.1 / k - 1e-12).all()  # γ/K exploration floor
        probs.append(p)
    assert len(probs) == rounds
    return np.array(probs)


def test_planted_arm_rises_above_every_other_under_paper_defaults() -> None:
    final = np.array([_simulate(PLANTED, 60, seed)[-1] for seed in range(10)])
    on_top = final[:, 0] > final[:, 1:].max(axis=1)
    assert on_top.sum() >= 8, final[:, 0]
    assert final[:, 0].mean() >= 0.25  # from 1/7 ≈ 0.143


def test_bandit_lr_learns_faster_than_the_paper_step() -> None:
    paper = np.mean([_simulate(PLANTED, 40, seed)[-1, 0] for seed in range(10)])
    faster = np.mean([_simulate(PLANTED, 40, seed, bandit_lr=0.05)[-1, 0] for seed in range(10)])
    assert faster >= 0.4 and faster > paper + 0.15, (paper, faster)


def test_identical_arms_stay_near_uniform() -> None:
    for seed in range(10):
        probs = _simulate([0.97] * 7, 40, seed, shared=True)
        assert np.abs(probs - 1 / 7).max() < 0.1, (seed, probs[-1])
