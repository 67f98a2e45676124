"""LEAD's second level: inside each arm the bandit chose, the highest-IDU rows of every task group. Pure NumPy.

How many rows a round takes from a cell (arm k, group g) is its quota (`quota`):
- `floor` (earlier lead-ray): ⌊r·|cell|⌋, at least 1 per non-empty group. Under 1/r rows per cell (67 at r = 0.015)
  this is 1 row per cell whatever its size, so every cell weighs the same;
- `proportional`: the arm takes ⌊r·its selectable rows⌋ (at least 1, at most its eligible rows), split over its
  groups in proportion to their eligible rows by largest remainder: the paper's int(r·|cluster|) at its scale, and
  not degenerate at ours. The size counts the arm's rows, not only its eligible ones, so that a round keeps its
  size once the budget is spent and only used rows are eligible (`reuse_after_budget`).
`truncate_top` (loss truncation) skips the top q of each cell's eligible rows by IDU before taking the quota: with
noisy rows (wrong or mismatched answers) the highest losses of a cell are mostly noise, which plain top-k takes first.
"""

from __future__ import annotations

import numpy as np

QUOTAS = ("floor", "proportional")


def top_k_per_group(ids: np.ndarray, groups: np.ndarray, scores: np.ndarray, quota: np.ndarray,
                    skip: np.ndarray | None = None) -> np.ndarray:
    """The `quota[g]` highest-scoring ids of each group g after its `skip[g]` highest (ties broken by lower id),
    in (group, -score, id) order.

    O(n) in the rows, not O(n log n): rows are bucketed by group (a radix sort on small group numbers), each
    group's cut-off score is found by a partition, and only the picked rows (a round's ~1.5%) are sorted. A full
    lexsort of an arm's rows was 85% of a round's selection time at 10M rows (bench/scale.py)."""
    if len(ids) == 0:
        return ids
    skip = np.zeros_like(quota) if skip is None else np.asarray(skip)
    take = quota + skip
    small = groups.min(initial=0) >= 0 and groups.max(initial=0) < np.iinfo(np.int16).max
    order = np.argsort(groups.astype(np.int16) if small else groups, kind="stable")
    bounds = np.searchsorted(groups[order], np.arange(len(quota) + 1))
    picked = []
    for g in np.flatnonzero((np.diff(bounds) > 0) & (quota > 0)):
        rows = order[bounds[g] : bounds[g + 1]]
        q = int(take[g])
        if q < len(rows):
            s = np.nan_to_num(scores[rows], nan=-np.inf)  # NaN ranks last, as in the sort by -score
            cut = np.partition(s, len(s) - q)[len(s) - q]  # the q-th highest score
            above, at = rows[s > cut], rows[s == cut]
            ties = np.lexsort((ids[at], np.isnan(scores[at])))  # -inf before NaN, then by id
            rows = np.concatenate([above, at[ties[: q - len(above)]]])
        if skip[g]:
            rows = rows[np.lexsort((ids[rows], -np.nan_to_num(scores[rows], nan=-np.inf)))][int(skip[g]):]
        picked.append(rows)
    rows = np.concatenate(picked) if picked else order[:0]
    return ids[rows[np.lexsort((ids[rows], -scores[rows], groups[rows]))]]


def largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """`total` split over `weights` (≥ 0) as whole numbers that add up to exactly `total` (Hamilton's method; ties
    to the lower index). All zero weights get nothing."""
    w = np.asarray(weights, dtype=np.float64)
    if total <= 0 or w.sum() <= 0:
        return np.zeros(len(w), dtype=np.int64)
    raw = total * w / w.sum()
    out = np.floor(raw).astype(np.int64)
    rest = total - int(out.sum())
    out[np.lexsort((np.arange(len(w)), -(raw - out)))[:rest]] += 1
    return out


def group_quota(kind: str, cell_size: np.ndarray, eligible_per_group: np.ndarray, sample_rate: float,
                arm_total: int | None = None) -> np.ndarray:
    """Rows to take from each group of one arm: `floor` from the cell sizes, `proportional` ⌊r·the arm's rows⌋
    split by the eligible rows (`arm_total` overrides the arm's size, for a round whose arms share one size)."""
    if kind == "floor":
        return np.maximum(1, np.floor(sample_rate * cell_size)).astype(np.int64)
    if kind == "proportional":
        eligible = int(eligible_per_group.sum())
        total = max(1, int(np.floor(sample_rate * cell_size.sum()))) if arm_total is None else arm_total
        return largest_remainder(min(total, eligible), eligible_per_group)
    raise ValueError(f"quota must be one of {QUOTAS}, got {kind!r}")


def truncation_skip(eligible_per_group: np.ndarray, truncate_top: float) -> np.ndarray:
    """Rows to skip at the top of each group: ⌊q·eligible⌋, at most all but one, so a small cell still gives a row."""
    if truncate_top <= 0:
        return np.zeros(len(eligible_per_group), dtype=np.int64)
    skip = np.floor(truncate_top * eligible_per_group).astype(np.int64)
    return np.minimum(skip, np.maximum(eligible_per_group - 1, 0))


def coarse_to_fine(arms: np.ndarray, eligible: dict[int, np.ndarray] | list[np.ndarray], group: np.ndarray, idu: np.ndarray,
                   cell_size: np.ndarray, sample_rate: float, quota: str = "floor", truncate_top: float = 0.0,
                   arm_totals: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, their arm): for each chosen arm k, the quota (`group_quota`) of the highest-IDU eligible rows
    (`eligible[k]`) of each group, after skipping each group's top `truncate_top`. `arm_totals[i]`: the rows arm
    `arms[i]` takes in all (proportional quota only; default ⌊r·the arm's rows⌋)."""
    chosen, chosen_arm = [], []
    num_groups = cell_size.shape[1]
    for i, k in enumerate(arms):
        e = eligible[int(k)]
        per_group = np.bincount(group[e], minlength=num_groups)
        total = None if arm_totals is None else int(arm_totals[i])
        q = group_quota(quota, cell_size[k], per_group, sample_rate, total)
        skip = truncation_skip(per_group, truncate_top)
        picked = top_k_per_group(e, group[e], idu[e], q, np.minimum(skip, np.maximum(per_group - q, 0)))
        chosen.append(picked)
        chosen_arm.append(np.full(len(picked), k, dtype=np.int64))
    return np.concatenate(chosen), np.concatenate(chosen_arm)
