"""Preparation pieces on their own: scoring sequences and IFD, faiss clustering, embeddings, static baselines."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lead_ray.models.nll import scoring_row, start_token_id
from lead_ray.prep.cluster import (
    assign_clusters,
    difficulty_arms,
    quantile_arms,
    sample_embeddings,
    spherical_kmeans,
)
from lead_ray.prep.score import ifd_score
from lead_ray.select.baselines import IterativeRescoreSelector, StaticSelector, baseline_scores
from lead_ray.select.strategies import build_selector


def test_scoring_row_modes_by_hand() -> None:
    ids, mask = np.array([5, 6, 7, 8, 9]), np.array([0, 0, 1, 1, 0], dtype=np.int8)
    full_ids, full_mask = scoring_row(ids, mask, "full", start_id=1)
    assert full_ids is ids and full_mask is mask
    r_ids, r_mask = scoring_row(ids, mask, "response", start_id=1)
    assert r_ids.tolist() == [1, 7, 8] and r_mask.tolist() == [0, 1, 1]  # both response tokens are scored
    with pytest.raises(ValueError, match="unknown scoring mode"):
        scoring_row(ids, mask, "prompt", 1)


def test_ifd_score_by_hand_uncapped() -> None:
    got = ifd_score(np.array([1.0, 3.0, 2.0, 1.0]), np.array([2.0, 2.0, 2.0, 0.0]))
    assert got.tolist() == [0.5, 1.5, 1.0, 1.0]  # 3/2 stays (preparation excludes or caps it); 0 denominator → 1


def test_ifd_above_one_exclude_or_cap_by_hand() -> None:
    from lead_ray.prep.prepare import apply_ifd_above_one

    train = np.array([True, True, True, False, True])
    ifd = np.array([0.4, 1.5, 1.0, 2.0, np.nan])  # row 3 is held out; row 4 has no IFD (ifd_model: none)
    selectable, stored = apply_ifd_above_one(train, ifd, "exclude")
    assert selectable.tolist() == [True, False, True, False, True]  # only the train row above 1 leaves
    np.testing.assert_array_equal(stored, ifd)  # excluded rows keep their true IFD, for the report
    selectable, stored = apply_ifd_above_one(train, ifd, "cap")
    assert selectable.tolist() == train.tolist()
    np.testing.assert_array_equal(stored, [0.4, 1.0, 1.0, 1.0, np.nan])
    with pytest.raises(ValueError, match="exclude or cap"):
        apply_ifd_above_one(train, ifd, "drop")


def test_start_token_id_prefers_bos() -> None:
    class C:
        bos_token_id, eos_token_id = None, [4, 5]

    assert start_token_id(C()) == 4
    C.bos_token_id = 2
    assert start_token_id(C()) == 2


def _blobs(n_per: int, centers: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.concatenate([c + 0.05 * rng.normal(size=(n_per, centers.shape[1])) for c in centers])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.repeat(np.arange(len(centers)), n_per)


def _write_embeddings(path: Path, x: np.ndarray) -> None:
    pq.write_table(pa.table({"id": np.arange(len(x), dtype=np.int64),
                             "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])}),
                   path, row_group_size=100)


def test_spherical_kmeans_sample_and_ray_assignment_recover_blobs(ray_local, tmp_path: Path) -> None:
    centers = np.eye(16)[:4]  # four orthogonal directions
    x, truth = _blobs(250, centers)
    _write_embeddings(tmp_path / "emb.parquet", x)
    sample = sample_embeddings(tmp_path / "emb.parquet", size=300, seed=1)
    assert sample.shape == (300, 16)  # exactly `size` distinct rows of the 1000, read in batches of 8192
    assert len(np.unique(sample, axis=0)) == 300 and all(np.isin(sample[:, 0], x[:, 0]))
    np.testing.assert_array_equal(sample, sample_embeddings(tmp_path / "emb.parquet", size=300, seed=1,
                                                            batch_size=7))  # batch edges do not change the rows
    assert sample_embeddings(tmp_path / "emb.parquet", size=5000).shape == (1000, 16)  # capped at the pool
    centroids = spherical_kmeans(sample, 4, seed=0)
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)
    cluster = assign_clusters(tmp_path / "emb.parquet", centroids, len(x))
    # each true blob maps to exactly one cluster and each cluster to one blob: a perfect partition
    pairs = set(zip(truth.tolist(), cluster.tolist()))
    assert len(pairs) == 4 and len({c for _, c in pairs}) == 4


def test_quantile_arms_by_hand_and_every_arm_holds_each_groups_share() -> None:
    # group 0: values 1 < 2 < 3 get ranks 0, 1, 2 → arms 0·2//3, 1·2//3, 2·2//3 = 0, 0, 1; group 1: 10, 20 → 0, 1
    assert quantile_arms(np.array([3.0, 1.0, 2.0, 10.0, 20.0]), np.array([0, 0, 0, 1, 1]), 2).tolist() == [1, 0, 0, 0, 1]
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 5, 1000)
    values = rng.normal(size=1000) + 10 * groups  # each group on its own scale, as IFD is per source
    arm = difficulty_arms("ifd_in_group", {"ifd": values}, groups, 7, seed=0)
    for g in range(5):
        counts = np.bincount(arm[groups == g], minlength=7)
        assert counts.max() - counts.min() <= 1 and counts.sum() == (groups == g).sum()  # equal bins, none lost
        order = np.argsort(values[groups == g])
        assert (np.diff(arm[groups == g][order]) >= 0).all()  # arm 0 lowest inside the group
    # 1-D k-means on the same values splits by group instead: most arms hold one group only
    by_kmeans = difficulty_arms("ifd", {"ifd": values}, groups, 7, seed=0)
    assert sum(len(np.unique(groups[by_kmeans == a])) == 1 for a in range(7)) >= 3


def test_embed_pool_is_normalised_ordered_and_semantic(ray_local, tmp_path: Path) -> None:
    from lead_ray.prep.embed import embed_pool, instruction_text

    texts = ["What is 12 plus 30?", "What is 12 plus 31?", "Explain Python's garbage collector.",
             "Describe how CPython frees unreachable objects."] * 5
    msgs = [json.dumps([{"role": "user", "content": t}, {"role": "assistant", "content": "ok"}]) for t in texts]
    (tmp_path / "pool").mkdir()
    pq.write_table(pa.table({"id": np.arange(len(msgs), dtype=np.int64), "messages": msgs}),
                   tmp_path / "pool" / "pool.parquet")
    assert instruction_text(msgs[0]) == texts[0]  # the answer is not embedded
    stats = embed_pool(tmp_path / "pool", tmp_path / "emb.parquet", model="builtin:minilm", batch_size=8,
                       concurrency=1)
    dim = stats["dim"]
    assert stats["rows"] == len(msgs) and stats["seconds"] > 0
    t = pq.read_table(tmp_path / "emb.parquet")
    assert dim == 384 and t.num_rows == len(msgs) and t.schema.field("embedding").type.list_size == 384
    assert t.column("id").to_numpy().tolist() == list(range(len(msgs)))  # id order (enriched relies on it)
    from lead_ray.prep.embed import embedding_matrix

    e = embedding_matrix(t.column("embedding"))
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert e[0] @ e[1] > 0.9 and e[2] @ e[3] > e[0] @ e[2] + 0.2  # similar tasks are close, unlike ones far


def _columns(n: int = 12) -> dict[str, np.ndarray]:
    return {"id": np.arange(n), "arm": np.where(np.arange(n) < 10, np.arange(n) % 2, -1),
            "group": np.zeros(n, dtype=np.int64), "iu0": np.linspace(1, 2, n), "ifd": np.linspace(1, 0, n),
            "n_response_tokens": np.array([5, 9, 1, 9, 3, 7, 2, 8, 6, 4, 100, 100])}


def test_static_selectors_rank_budget_and_epochs_by_hand() -> None:
    cols = _columns()
    sel = build_selector(cols, {"selector": "longest", "num_arms": 2, "budget": 4, "max_uses": 2,
                                "round_size": 3})
    assert isinstance(sel, StaticSelector)
    assert sel.order.tolist() == [1, 3, 7, 5]  # longest 9, 9 (lower id first), 8, 7; eval rows 10, 11 never
    plans = []
    while (plan := sel.next_round()) is not None:
        plans.append(plan.ids.tolist())
        sel.report(plan.ids, np.ones(len(plan.ids)))
        sel.end_round(np.zeros(2), np.zeros(2))
    assert plans == [[1, 3, 7], [5], [1, 3, 7], [5]]  # two epochs of 3 + 1
    assert sel.num_unique == 4 and sel.uses.max() == 2 and sel.stop_reason == "budget"
    assert build_selector(cols, {"selector": "static_ifd", "num_arms": 2, "budget": 2}).order.tolist() == [0, 1]
    assert build_selector(cols, {"selector": "static_iu", "num_arms": 2, "budget": 2}).order.tolist() == [9, 8]
    full = build_selector(cols, {"selector": "full", "num_arms": 2, "budget": 10})
    assert sorted(full.order.tolist()) == list(range(10))


def test_random_baseline_is_seeded_and_unknown_kind_fails() -> None:
    cols = _columns()
    a = baseline_scores("random", cols, seed=3)
    assert np.array_equal(a, baseline_scores("random", cols, seed=3))
    assert not np.array_equal(a, baseline_scores("random", cols, seed=4))
    with pytest.raises(ValueError, match="unknown static selector"):
        baseline_scores("oracle", cols)


def test_iterative_rescore_asks_for_scores_then_takes_the_highest_by_hand() -> None:
    cols = _columns()  # 10 selectable rows (ids 0..9), eval rows 10 and 11
    sel = build_selector(cols, {"selector": "iterative_rescore", "num_arms": 2, "budget": 5, "max_uses": 2,
                                "round_size": 3})
    assert isinstance(sel, IterativeRescoreSelector)
    assert sel.rescore_request().tolist() == list(range(10))  # every eligible row, never the eval rows
    sel.report_scores(np.arange(5), np.zeros(5))
    assert sel.rescore_request().tolist() == [5, 6, 7, 8, 9]  # only what is still missing
    with pytest.raises(RuntimeError, match="before every eligible sample was scored"):
        sel.next_round()
    sel.report_scores(np.arange(10), np.array([0.1, 0.9, 0.5, 0.9, 0.2, 0.3, 0.8, 0.0, 0.4, 0.6]))
    assert sel.rescore_request() is None
    plan = sel.next_round()
    assert plan.ids.tolist() == [1, 3, 6]  # 0.9, 0.9 (lower id first), 0.8
    assert sel.rescore_request() is None and sel.next_round() is plan  # asked again mid-round: same plan
    sel.report(plan.ids, np.ones(3))
    sel.end_round(np.zeros(2), np.zeros(2))
    records = [sel.round_record()]
    assert sel.rescore_request().tolist() == list(range(10))  # the model moved: everything again
    # round 2: rows 1 and 3 still score highest; only 2 new rows fit the budget of 5 (3 used)
    sel.report_scores(np.arange(10), np.array([0.1, 0.9, 0.5, 0.95, 0.2, 0.3, 0.1, 0.0, 0.4, 0.6]))
    plan = sel.next_round()
    assert plan.ids.tolist() == [3, 1, 9]  # 0.95, 0.9 (both re-used), then the best new row, 0.6
    sel.report(plan.ids, np.ones(3))
    sel.end_round(np.zeros(2), np.zeros(2))
    records.append(sel.round_record())
    # rows 1 and 3 are used up (max_uses 2); the budget has one new row left, filled by the best new score
    sel.report_scores(np.arange(10), np.array([0.1, 9.0, 0.5, 9.0, 0.2, 0.3, 0.1, 0.0, 0.7, 0.6]))
    assert sel.rescore_request() is None
    plan = sel.next_round()
    assert plan.ids.tolist() == [8, 9]  # by score: 8 (0.7, new), 9 (0.6, re-used); new 2 (0.5) does not fit
    assert sel.uses[[1, 3]].tolist() == [2, 2]
    # a restarted service replays the plan without the scores (their model has moved on): taken as it was
    again = build_selector(cols, {"selector": "iterative_rescore", "num_arms": 2, "budget": 5, "max_uses": 2,
                                  "round_size": 3})
    again.load_rounds(records)
    again.replay(dataclasses.replace(plan))  # what the service sent: a copy of the plan
    assert again.plan.ids.tolist() == [8, 9] and again.uses.tolist() == sel.uses.tolist()
    sel.report(plan.ids, np.ones(2))
    sel.end_round(np.zeros(2), np.zeros(2))
    assert sel.num_unique == 5 and sel.next_round() is None and sel.stop_reason == "budget"
    assert sel.rescore_request() is None


@pytest.mark.parametrize("params", [{"budget": 50}, {"budget": 4, "reuse_after_budget": True, "max_rounds": 3}])
def test_a_static_run_restored_after_its_last_round_says_why_it_stopped(params: dict) -> None:
    """What the driver does with the final checkpoint: the round records, then the last next_round (which answered
    None) replayed. Static baselines stop in their own next_round, which the replay runs, so the reason is theirs."""
    cols = _columns()
    kw = {"selector": "longest", "num_arms": 2, "max_uses": 2, "round_size": 3, **params}
    live, records = build_selector(cols, kw), []
    while (plan := live.next_round()) is not None:
        live.report(plan.ids, np.ones(len(plan.ids)))
        live.end_round(np.zeros(2), np.zeros(2))
        records.append(live.round_record())
    restored = build_selector(cols, kw)
    restored.load_rounds(records)
    restored.replay(None)
    assert restored.stop_reason == live.stop_reason == "budget" and restored.round == live.round > 0


def test_scoring_feeds_rows_longest_first(tmp_path):
    from lead_ray.prep.score import length_sorted_ids

    pq.write_table(pa.table({"id": [0, 1, 2, 3, 4], "n_prompt_tokens": [5, 1, 9, 2, 5],
                             "n_response_tokens": [1, 1, 1, 30, 1]}), tmp_path / "pool.parquet")
    assert length_sorted_ids(tmp_path).tolist() == [3, 2, 0, 4, 1]  # 32, 10, 6, 6 (ties keep id order), 2
