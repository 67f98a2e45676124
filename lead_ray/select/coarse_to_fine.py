"""LEAD's second level: inside each arm the bandit chose, the highest-IDU rows of every task group. Pure NumPy."""

from __future__ import annotations

import numpy as np


def top_k_per_group(ids: np.ndarray, groups: np.ndarray, scores: np.ndarray, quota: np.ndarray) -> np.ndarray:
    """The `quota[g]` highest-scoring ids of each group g (ties broken by lower id), in (group, -score, id) order.

    O(n) in the rows, not O(n log n): rows are bucketed by group (a radix sort on small group numbers), each
    group's cut-off score is found by a partition, and only the picked rows (a round's ~1.5%) are sorted. A full
    lexsort of an arm's rows was 85% of a round's selection time at 10M rows (bench/scale.py)."""
    if len(ids) == 0:
        return ids
    small = groups.min(initial=0) >= 0 and groups.max(initial=0) < np.iinfo(np.int16).max
    order = np.argsort(groups.astype(np.int16) if small else groups, kind="stable")
    bounds = np.searchsorted(groups[order], np.arange(len(quota) + 1))
    picked = []
    for g in np.flatnonzero((np.diff(bounds) > 0) & (quota > 0)):
        rows = order[bounds[g] : bounds[g + 1]]
        q = int(quota[g])
        if q < len(rows):
            s = np.nan_to_num(scores[rows], nan=-np.inf)  # NaN ranks last, as in the sort by -score
            cut = np.partition(s, len(s) - q)[len(s) - q]  # the q-th highest score
            above, at = rows[s > cut], rows[s == cut]
            ties = np.lexsort((ids[at], np.isnan(scores[at])))  # -inf before NaN, then by id
            rows = np.concatenate([above, at[ties[: q - len(above)]]])
        picked.append(rows)
    rows = np.concatenate(picked) if picked else order[:0]
    return ids[rows[np.lexsort((ids[rows], -scores[rows], groups[rows]))]]


def coarse_to_fine(arms: np.ndarray, eligible: list[np.ndarray], group: np.ndarray, idu: np.ndarray,
                   cell_size: np.ndarray, sample_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """(ids, their arm): for each chosen arm k, ⌊sample_rate·|cell (k, g)|⌋ rows (at least 1) of each group g,
    the highest-IDU eligible ones (`eligible[k]`)."""
    chosen, chosen_arm = [], []
    for k in arms:
        e = eligible[int(k)]
        quota = np.maximum(1, np.floor(sample_rate * cell_size[k])).astype(np.int64)
        picked = top_k_per_group(e, group[e], idu[e], quota)
        chosen.append(picked)
        chosen_arm.append(np.full(len(picked), k, dtype=np.int64))
    return np.concatenate(chosen), np.concatenate(chosen_arm)
