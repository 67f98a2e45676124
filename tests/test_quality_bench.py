"""bench/quality.py --quick end to end: the table is produced and internally consistent (real Ray, real training);
and, without a model, the real-text pool of `--model smollm2` and its time-ratio hand-over from --rescore-timing."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import quality  # noqa: E402
import quality_text_pool  # noqa: E402


@pytest.mark.slow
def test_quality_bench_quick_table_is_consistent(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "bench/quality.py", "--quick", "--work", str(tmp_path / "work"),
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = list(csv.DictReader(open(out / "runs.csv")))
    table = list(csv.DictReader(open(out / "table.csv")))
    assert (out / "quality.png").stat().st_size > 10_000

    # 9 families × QUICK's rows per family (bench/quality_pool.py); held-out rows and train rows with IFD > 1
    # (ifd_above_one: exclude) are never selectable: the budget is a fraction of the rest
    enriched = pq.read_table(tmp_path / "work" / "prepared" / "prep" / "enriched.parquet").to_pandas()
    n_train = int(((enriched["split"] != "eval") & ~enriched["ifd_excluded"]).sum())
    assert 0.5 * 9 * quality.QUICK["per_family"] <= n_train <= 9 * quality.QUICK["per_family"]
    methods = {r["method"] for r in runs}
    assert methods == {"lead", "random", "iterative_rescore"}
    assert len(runs) == 3  # three methods at one budget
    for r in runs:
        budget = round(float(r["budget"]) * n_train)
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


def _texts(row: dict) -> set[str]:
    return {" ".join(m["content"].split()) for m in row["messages"] if m["role"] != "system"}


def _arithmetic_is_right(answer: str) -> bool:
    if " divided by " in answer:
        a, _, _, d, _, q, _, r = answer.split()
        return divmod(int(a), int(d)) == (int(q), int(r))
    a, op, b, _, c = answer.split()
    return {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op] == int(c)


def test_text_pool_is_seeded_noisy_and_held_out_apart() -> None:
    train, held_out = quality_text_pool.make_rows(800, 150, seed=0)
    assert (train, held_out) == quality_text_pool.make_rows(800, 150, seed=0)  # the same pool on every machine
    assert len(train) == 800 and len(held_out) == 150
    assert {r["split"] for r in train} == {"train"} and {r["split"] for r in held_out} == {"eval"}
    noisy = sum(r["source"] in quality_text_pool.NOISY for r in train) / len(train)
    dup = sum(r["source"] in quality_text_pool.DUPLICATE for r in train) / len(train)
    assert 0.2 <= noisy <= 0.25 and 0.08 <= dup <= 0.12
    assert {r["source"] for r in train} == set(quality_text_pool.CLEAN) | quality_text_pool.NOISY \
        | quality_text_pool.DUPLICATE
    assert {r["source"] for r in held_out} <= set(quality_text_pool.CLEAN)  # held out: clean rows only
    assert sum(r["source"] == "arithmetic" for r in held_out) >= len(held_out) / 3
    seen = set().union(*map(_texts, train))
    assert not any(_texts(r) & seen for r in held_out)  # no held-out text is also in training
    for r in train:  # a recorded wrong answer is wrong, a clean one right
        if r["source"] in ("noisy_wrong_answer", "arithmetic"):
            assert _arithmetic_is_right(r["messages"][-1]["content"]) == (r["source"] == "arithmetic"), r
    by_question = {}
    for r in train:
        if r["source"].startswith("dup_"):
            by_question.setdefault(r["messages"][-1]["content"], []).append(r)
    assert all(len(rows) >= 4 for rows in by_question.values())  # near-duplicates come in clusters
    assert all(sum(map(len, _texts(r))) <= quality_text_pool.MAX_ROW_CHARS for r in held_out)


def test_smollm2_headline_time_ratio_comes_from_rescore_timing(tmp_path) -> None:
    assert math.isnan(quality.timing_time_ratio(tmp_path)[0])  # no timing run yet: nan
    quality.write_csv([{"pool_rows": 300, "time_ratio": 0.5}, {"pool_rows": 600, "time_ratio": 0.25}],
                      tmp_path / "rescore_timing.csv")
    assert quality.timing_time_ratio(tmp_path) == (0.25, 600)  # the largest pool's
    assert quality.METHODS["lead_learnable"] == {"utility": "learnable"}
