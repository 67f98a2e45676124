"""bench/quality_regime.py's statistics, by hand: paired differences from random with a 95% t-interval, and the
headline. (The benchmark itself trains SmolLM2 for hours; its pool has tests/test_quality_regime_pool.py.)"""

from __future__ import annotations

import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import quality_regime  # noqa: E402


def _rows() -> list[dict]:
    rows = []
    for method, nll, noisy in (("random", [2.0, 2.1, 2.2, 2.3], 0.2), ("default", [1.9, 2.0, 2.0, 2.2], 0.1),
                               ("paper", [2.1, 2.2, 2.3, 2.4], 0.4)):
        for seed, v in enumerate(nll):
            row = {m: 0.0 for m in quality_regime.METRICS}
            row.update(pool="test", twin="noisy", method=method, budget=0.025, seed=seed, heldout_nll_macro=v,
                       noisy_share_unique=noisy, train_seconds=1.0, eval_seconds=1.0)
            rows.append(row)
    return rows


def test_paired_gain_and_interval_by_hand() -> None:
    # default against random, seed by seed: 0.1, 0.1, 0.2, 0.1 nats lower -> mean 0.125, sd 0.05,
    # half-width t(0.975, 3) · 0.05 / √4 = 3.182 · 0.025 = 0.07955
    p = quality_regime.paired(_rows(), "default", "heldout_nll_macro", "test", "noisy", 0.025)
    assert p["n"] == 4
    assert p["gain"] == pytest.approx(0.125)
    assert (p["lo"], p["hi"]) == pytest.approx((0.125 - 0.07955, 0.125 + 0.07955))
    # paper is worse by exactly 0.1 every time: gain -0.1 with a zero-width interval
    p = quality_regime.paired(_rows(), "paper", "heldout_nll_macro", "test", "noisy", 0.025)
    assert (p["gain"], p["lo"], p["hi"]) == pytest.approx((-0.1, -0.1, -0.1))
    # higher-is-better metrics keep their sign: all zero here
    assert quality_regime.paired(_rows(), "default", "exact_match", "test", "noisy", 0.025)["gain"] == 0.0


def test_headline_reads_the_table() -> None:
    table = quality_regime.summarise(_rows())
    assert quality_regime.headline(table, "test") == ("default_vs_random_nll_gain=0.1250 "
                                                      "paper_vs_random_nll_gain=-0.1000 "
                                                      "default_noisy_share=0.100 random_noisy_share=0.200")


def test_pool_variants_clean_twin_and_groups_by_source() -> None:
    import numpy as np

    cols = {"arm": np.array([0, 1, -1, 2]), "group": np.array([5, 5, 5, 5]),
            "source": np.array(["weekday", "arithmetic", "weekday", "html"])}
    pool = quality_regime.Pool("test", None, cols, np.array([False, True, False, False]), REPO)
    clean = pool.variant("clean", "embedding")
    assert clean["arm"].tolist() == [0, -1, -1, 2] and clean["group"].tolist() == [5, 5, 5, 5]
    by_source = pool.variant("noisy", "source")  # sorted sources: arithmetic 0, html 1, weekday 2
    assert by_source["group"].tolist() == [2, 0, 2, 1] and by_source["arm"].tolist() == [0, 1, -1, 2]
    assert cols["arm"].tolist() == [0, 1, -1, 2]  # the pool's own columns are untouched


def test_source_shares_and_per_source_gains_by_hand() -> None:
    import numpy as np

    source = np.array(["a", "a", "b", "b", "c"])
    # ids 0, 0, 2, 4: unique rows 0, 2, 4 -> one each of a, b, c; a repeated id counts once
    shares = quality_regime.source_shares(np.array([0, 0, 2, 4]), source)
    assert shares == pytest.approx({"share/a": 1 / 3, "share/b": 1 / 3, "share/c": 1 / 3})
    assert sum(shares.values()) == pytest.approx(1.0)
    assert quality_regime.source_shares(np.array([1]), source) == {"share/a": 1.0, "share/b": 0.0, "share/c": 0.0}
    rows = _rows()
    for r in rows:  # per-source NLL: default 0.2 nats lower than random on source a, every seed
        r["heldout_nll/a"] = {"random": 3.0, "default": 2.8, "paper": 3.1}[r["method"]]
    cell = next(s for s in quality_regime.summarise(rows) if s["method"] == "default")
    assert cell["heldout_nll/a_gain_vs_random"] == pytest.approx(0.2)  # lower NLL is a positive gain
    assert cell["heldout_nll/a_mean"] == pytest.approx(2.8)


def test_sources_rank_correlation_and_clean_rows_by_hand() -> None:
    import numpy as np
    import quality_regime_sources as qrs

    assert qrs.spearman(np.array([1, 2, 3, 4]), np.array([9.0, 7.0, 5.0, 1.0])) == pytest.approx(-1.0)
    # ties share their mean rank: x ranks (0.5, 0.5, 2), y ranks (0, 1, 2) -> r = 0.866
    assert qrs.spearman(np.array([1, 1, 2]), np.array([1.0, 2.0, 3.0])) == pytest.approx(3 ** 0.5 / 2)
    source = np.array(["u", "u", "u", "h"])
    noisy = np.array([False, True, False, False])
    # ids 0, 0, 1, 3: unique 0, 1, 3; clean "u" rows among them: row 0 only (row 1 is noisy, row 3 is "h")
    assert qrs.clean_rows_of(np.array([0, 0, 1, 3]), source, noisy, "u") == 1
