"""The SelectionService actor: a thin shell whose answers match the pure selector, through real Ray calls."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lead_ray.select.selector import LeadSelector
from lead_ray.select.service import start_service

PARAMS = {"num_arms": 3, "gamma": 0.2, "smoothing": 0.3, "sample_rate": 0.1, "max_uses": 2, "budget": 40,
          "max_rounds": 8, "seed": 7}


def _enriched(path: Path, n: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    iu0, arm, group = rng.uniform(0.5, 3.0, n), rng.integers(-1, 3, n), rng.integers(0, 4, n)
    pq.write_table(pa.table({"id": np.arange(n), "arm": arm, "group": group, "iu0": iu0}), path)
    return iu0, arm, group


def _drive(next_round, report, end_round, rounds: int, rng: np.random.Generator) -> list[np.ndarray]:
    picked = []
    for _ in range(rounds):
        plan = next_round()
        if plan is None:
            break
        ids = plan["ids"] if isinstance(plan, dict) else plan.ids
        picked.append(ids)
        half = len(ids) // 2  # two "workers" report their shares separately
        report(ids[:half], rng.uniform(0, 3, half))
        report(ids[half:], rng.uniform(0, 3, len(ids) - half))
        end_round(rng.normal(size=16), 1e-3)
    return picked


def test_service_matches_pure_selector_and_restores(ray_local, tmp_path: Path) -> None:
    ray = ray_local
    iu0, arm, group = _enriched(tmp_path / "enriched.parquet")
    actor = start_service(str(tmp_path / "enriched.parquet"), PARAMS)
    pure = LeadSelector(iu0, arm, group, **PARAMS)

    got = _drive(lambda: ray.get(actor.next_round.remote()), lambda i, v: actor.report.remote(i, v),
                 lambda g, lr: ray.get(actor.end_round.remote(g, lr, {})), 3, np.random.default_rng(1))
    want = _drive(lambda: (lambda p: None if p is None else {"ids": p.ids})(pure.next_round()), pure.report,
                  pure.end_round, 3, np.random.default_rng(1))
    assert len(got) == 3 and all(np.array_equal(a, b) for a, b in zip(got, want))

    snap = ray.get(actor.snapshot.remote())
    later = _drive(lambda: ray.get(actor.next_round.remote()), lambda i, v: actor.report.remote(i, v),
                   lambda g, lr: ray.get(actor.end_round.remote(g, lr, {})), 2, np.random.default_rng(2))
    fresh = start_service(str(tmp_path / "enriched.parquet"), PARAMS)
    assert ray.get(fresh.restore.remote(snap)) == 3
    again = _drive(lambda: ray.get(fresh.next_round.remote()), lambda i, v: fresh.report.remote(i, v),
                   lambda g, lr: ray.get(fresh.end_round.remote(g, lr, {})), 2, np.random.default_rng(2))
    assert all(np.array_equal(a, b) for a, b in zip(later, again))

    summary = ray.get(fresh.summary.remote())
    sel = ray.get(fresh.selections.remote())
    assert summary["rounds"] == 5 and len(sel["id"]) == sum(len(x) for x in got + later)
    assert not np.isnan(sel["loss"]).any()  # every selected sample's loss arrived before end_round
    assert np.all(arm[sel["id"]] >= 0)
    assert abs(sum(summary["arm_probs"]) - 1) < 1e-9
