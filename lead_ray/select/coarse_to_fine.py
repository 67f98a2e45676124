"""LEAD's second level: inside each arm the bandit chose, the highest-IDU rows of every task group. Pure NumPy."""

from __future__ import annotations

import numpy as np


def top_k_per_group(ids: np.ndarray, groups: np.ndarray, scores: np.ndarray, quota: np.ndarray) -> np.ndarray:
    """The `quota[g]` highest-scoring ids of each group g (ties broken by lower id), vectorised."""
    if len(ids) == 0:
        return ids
    order = np.lexsort((ids, -scores, groups))
    g_sorted = groups[order]
    first = np.searchsorted(g_sorted, g_sorted, side="left")
    rank = np.arange(len(order)) - first
    return ids[order[rank < quota[g_sorted]]]


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
