"""bench/quality.py --quick end to end: the table is produced and internally consistent (real Ray, real training)."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_quality_bench_quick_table_is_consistent(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "bench/quality.py", "--quick", "--work", str(tmp_path / "work"),
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = list(csv.DictReader(open(out / "runs.csv")))
    table = list(csv.DictReader(open(out / "table.csv")))
    assert (out / "quality.png").stat().st_size > 10_000

    n_train = 9 * 40  # 9 families × 40 rows (bench/quality_pool.py); held-out rows are never selectable
    methods = {r["method"] for r in runs}
    assert methods == {"lead", "random", "iterative_rescore", "full"}
    assert len(runs) == 3 * 2 + 1  # three methods at two budgets, and the full pool once
    for r in runs:
        budget = n_train if r["method"] == "full" else round(float(r["budget"]) * n_train)
        assert int(r["budget_samples"]) == budget, r
        assert int(r["unique_samples"]) == budget, r  # exactly its budget of unique samples
        assert int(r["trained_samples"]) == 4 * budget, r  # the same training: budget × max_uses presentations
        assert r["stop_reason"] == "budget"
        assert 0.0 <= float(r["exact_match"]) <= 1.0 and math.isfinite(float(r["heldout_nll"]))
        assert float(r["selection_seconds"]) <= float(r["wall_seconds"])
    assert len({r["nll_before"] for r in runs}) == 1  # one base model and one held-out set for every run

    for cell in table:  # the table is the per-run rows' mean, cell by cell
        mine = [float(r["heldout_nll"]) for r in runs if r["method"] == cell["method"]
                and float(r["budget"]) == float(cell["budget"])]
        assert len(mine) == int(cell["seeds"]) and math.isclose(float(cell["heldout_nll_mean"]), sum(mine) / len(mine))
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("lead_vs_random_nll_gain=") and " lead_vs_iterative_time_ratio=" in last
    gain, ratio = (float(part.split("=")[1]) for part in last.split())
    assert math.isfinite(gain) and 0 < ratio
