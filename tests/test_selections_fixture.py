"""Refactors keep selection identical (ids, rounds, arms exactly; utilities to 1e-12): every strategy, replayed on a fixed synthetic run, must reproduce the
selections stored in tests/fixtures/ (made before select/ was split into sibling strategies). Pure NumPy, fast.

Regenerate only for an intended change of selection behaviour: `python tests/test_selections_fixture.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import paper_selection

FIXTURE = Path(__file__).parent / "fixtures" / "selections_replay.npz"
CASES = {"lead": {}, "lead_learnable": {"utility": "learnable"}, "lead_uniform_arms": {"uniform_arms": True},
         "lead_two_arms": {"arms_per_round": 2, "reuse_after_budget": True},
         "random": {"selector": "random"}, "longest": {"selector": "longest"}, "static_iu": {"selector": "static_iu"},
         "static_ifd": {"selector": "static_ifd"}, "full": {"selector": "full"},
         "iterative_rescore": {"selector": "iterative_rescore"}}
COLUMNS = ("round", "id", "arm", "group", "idu_before", "idu_after", "loss")


def pool(n: int = 400) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    arm = rng.integers(0, 7, n)
    arm[rng.random(n) < 0.08] = -1  # held-out or excluded rows
    return {"id": np.arange(n), "arm": arm, "group": rng.integers(0, 5, n), "iu0": rng.uniform(0.5, 4.0, n),
            "ifd": rng.uniform(0.2, 1.0, n), "n_response_tokens": rng.integers(3, 200, n),
            "ref_loss": rng.uniform(0.2, 2.0, n)}


def replay(build_selector: Callable[..., Any], overrides: dict[str, Any]) -> dict[str, np.ndarray]:
    """A whole run against a made-up model whose per-row loss falls with each use; returns the selections."""
    cols = pool()
    params = {**paper_selection(), "selector": "lead", "num_arms": 7, "budget": 80, "sample_rate": 0.05, "max_uses": 3,
              "max_rounds": 14, "seed": 3, **overrides}
    sel = build_selector(cols, params)
    rng = np.random.default_rng(11)
    fall = 0.5 + 0.4 * np.random.default_rng(5).random(len(cols["id"]))  # each row's loss ratio per use
    for _ in range(100):
        need = sel.rescore_request()
        if need is not None:
            sel.report_scores(need, cols["iu0"][need] * fall[need] ** sel.uses[need])
            continue
        plan = sel.next_round()
        if plan is None:
            break
        sel.report(plan.ids, cols["iu0"][plan.ids] * fall[plan.ids] ** sel.uses[plan.ids])
        grad = rng.normal(size=32)
        sel.end_round(grad, -0.01 * grad + 0.001 * rng.normal(size=32))
    return sel.selections()


@pytest.mark.parametrize("case", CASES)
def test_selections_match_the_stored_fixture(case: str) -> None:
    from lead_ray.select.strategies import build_selector

    got = replay(build_selector, CASES[case])
    with np.load(FIXTURE, allow_pickle=False) as z:
        for col in COLUMNS:
            want = z[f"{case}/{col}"]
            assert got[col].dtype == want.dtype, (case, col)
            if want.dtype.kind == "f":  # the made-up model's `iu0 * fall ** uses` differs by an ulp across CPUs
                np.testing.assert_allclose(got[col], want, rtol=1e-12, atol=0, equal_nan=True, err_msg=f"{case} {col}")
            else:  # which rows, rounds, arms and groups: exactly
                assert np.array_equal(got[col], want), (case, col)
    assert len(got["id"]) > 0


if __name__ == "__main__":
    try:
        from lead_ray.select.strategies import build_selector
    except ImportError:  # the code before select/ was split
        from lead_ray.baselines import build_selector
    arrays = {f"{case}/{col}": np.asarray(v) for case, o in CASES.items() for col, v in replay(build_selector, o).items()}
    np.savez(FIXTURE, **arrays)
    print(f"wrote {FIXTURE}: {len(CASES)} cases")
