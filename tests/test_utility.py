"""utility: learnable (RHO-LOSS's reducible loss) against LEAD's loss-based utility, through the real selector."""

from __future__ import annotations

import numpy as np
import pytest

from lead_ray.config import ConfigError, LeadConfig
from lead_ray.select.strategies import build_selector
from tests.helpers import paper_selection


def _columns(n_clean: int = 30, n_noisy: int = 30) -> dict[str, np.ndarray]:
    # Clean rows: base NLL 2.0, the warm-up model (which learned the task) 0.5. Noisy rows (wrong answers): the base
    # model finds them harder (2.6), and so does the warm-up model (2.5): nothing in them can be learned.
    n = n_clean + n_noisy
    return {"id": np.arange(n), "arm": np.zeros(n, dtype=np.int64), "group": np.zeros(n, dtype=np.int64),
            "iu0": np.r_[np.full(n_clean, 2.0), np.full(n_noisy, 2.6)],
            "ref_loss": np.r_[np.full(n_clean, 0.5), np.full(n_noisy, 2.5)]}


def _run(utility: str, rounds: int = 6) -> tuple[float, np.ndarray]:
    """Share of noisy rows among the trained ones, under the paper's selection (the default's truncate_top drops
    the highest-IDU rows, which hides what the utility alone does). A clean row's loss falls with each use; a noisy
    one's never."""
    cols = _columns()
    noisy = cols["ref_loss"] > 1.0
    sel = build_selector(cols, {**paper_selection(), "selector": "lead", "utility": utility, "num_arms": 1,
                                "sample_rate": 0.2,
                                "max_uses": 4, "budget": 60, "max_rounds": rounds, "smoothing": 0.5})
    picked = []
    while (plan := sel.next_round()) is not None:
        loss = np.where(noisy[plan.ids], 2.6, 2.0 * 0.6 ** (sel.uses[plan.ids] - 1))
        sel.report(plan.ids, loss)
        sel.end_round(np.zeros(3), np.zeros(3))
        picked.append(plan.ids)
    ids = np.concatenate(picked)
    return float(noisy[ids].mean()), sel.idu


def test_learnable_utility_by_hand() -> None:
    cols = _columns(2, 2)
    sel = build_selector(cols, {"selector": "lead", "utility": "learnable", "num_arms": 1, "sample_rate": 1.0,
                                "budget": 4, "smoothing": 0.5})
    np.testing.assert_allclose(sel.idu, [1.5, 1.5, 0.1, 0.1])  # IDU_0 = iu0 - ref_loss
    plan = sel.next_round()
    sel.report(plan.ids, np.array([1.0, 1.0, 2.6, 2.6]))
    (arm,) = sel.end_round(np.zeros(1), np.zeros(1))["arms"]
    # IDU ← 0.5·IDU + 0.5·(L - ref + ΔL′), ΔL′ = 0 in round one: clean 0.75 + 0.25 = 1.0, noisy 0.05 + 0.05 = 0.1
    np.testing.assert_allclose(sel.idu, [1.0, 1.0, 0.1, 0.1])
    assert arm["reward"] == pytest.approx(0.25)  # mean drop (0.5 + 0.5 + 0 + 0) / 4
    lead = build_selector(cols, {"selector": "lead", "num_arms": 1, "sample_rate": 1.0, "budget": 4})
    np.testing.assert_allclose(lead.idu, cols["iu0"])  # utility: lead ignores the reference


def test_learnable_utility_avoids_rows_that_cannot_be_learned() -> None:
    lead_share, _ = _run("lead")
    learnable_share, _ = _run("learnable")
    assert lead_share >= 0.5  # loss-based utility keeps choosing the rows whose loss never falls
    assert learnable_share <= 0.2 and learnable_share < lead_share


def test_learnable_needs_a_reference_model() -> None:
    with pytest.raises(ConfigError, match="'utility'.*reference model"):
        LeadConfig.from_flat(utility="learnable", ifd_model="none", arm_by="iu0").validate()
    with pytest.raises(ConfigError, match="'utility'"):
        LeadConfig.from_flat(utility="rho").validate()
    assert LeadConfig.from_flat(utility="learnable").validate().selection.utility == "learnable"
