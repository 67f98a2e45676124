"""Screening a selection config without training: a dry run of the selector, and what its picks look like.

A dry run plays the real selector round by round on a prepared pool, feeding each trained row a loss from a model
of training (`loss_of`) instead of a forward pass, with no ΔL′ (zero ḡ and u). It costs milliseconds, so every
option can be screened on a dev pool before any is trained. It can judge what selection does with the scores it
starts from (quota, truncation, arm allocation, thresholds); what depends on how losses really move under training
(demotion, the smoothing weight, the bandit's rewards) needs training runs. Pure NumPy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from lead_ray.select.rounds import RoundBook

LossModel = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (ids, their uses counting this one) -> losses


def decaying_loss(iu0: np.ndarray, decay: float = 0.9) -> LossModel:
    """Each use lowers a row's loss by the factor `decay` from its base-model NLL: L = iu0 · decay^(uses-1)."""
    base = np.asarray(iu0, dtype=np.float64)
    return lambda ids, uses: base[ids] * decay ** (np.asarray(uses) - 1)


def dry_run(selector: RoundBook, loss_of: LossModel) -> RoundBook:
    """Play `selector` to its stop with losses from `loss_of`; returns it (its log, stats and `stop_reason`)."""
    zero = np.zeros(1)
    while (plan := selector.next_round()) is not None:
        selector.report(plan.ids, loss_of(plan.ids, selector.uses[plan.ids]))
        selector.end_round(zero, zero)
    return selector


def kl_divergence(picked: np.ndarray, pool: np.ndarray) -> float:
    """KL(picked mix ‖ pool mix) in nats over the labels of `pool`: 0 when the picks match the pool's mix."""
    labels, pool_counts = np.unique(pool, return_counts=True)
    picked_counts = np.array([(picked == label).sum() for label in labels], dtype=np.float64)
    if picked_counts.sum() == 0:
        return float("nan")
    p, q = picked_counts / picked_counts.sum(), pool_counts / pool_counts.sum()
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / q[nz])).sum())


def selection_diagnostics(trained_ids: np.ndarray, source: np.ndarray, arm: np.ndarray, group: np.ndarray,
                          noisy: np.ndarray | None = None) -> dict[str, Any]:
    """What a run's picks look like against its pool's selectable rows (`arm` ≥ 0): the KL of their source mix
    from the pool's, the share of sources and of (arm, group) cells with a pick, and with `noisy` (a mask over all
    rows) the noisy share of the unique rows and of the trained samples (uses counted)."""
    trained_ids = np.asarray(trained_ids, dtype=np.int64)
    unique = np.unique(trained_ids)
    selectable = np.flatnonzero(np.asarray(arm) >= 0)
    source = np.asarray(source)
    cells = np.asarray(arm, dtype=np.int64) * (int(np.max(group, initial=0)) + 1) + np.asarray(group)
    out: dict[str, Any] = {
        "unique_rows": int(len(unique)), "trained_samples": int(len(trained_ids)),
        "source_kl": kl_divergence(source[unique], source[selectable]),
        "source_coverage": float(np.isin(np.unique(source[selectable]), source[unique]).mean()),
        "cell_coverage": float(np.isin(np.unique(cells[selectable]), cells[unique]).mean()),
    }
    if noisy is not None:
        noisy = np.asarray(noisy, dtype=bool)
        out["noisy_share_unique"] = float(noisy[unique].mean()) if len(unique) else float("nan")
        out["noisy_share_trained"] = float(noisy[trained_ids].mean()) if len(trained_ids) else float("nan")
    return out


def arm_probability_trace(selector: RoundBook) -> np.ndarray:
    """[rounds, arms]: the distribution each round's arms were drawn from, round by round."""
    return np.array([s["arm_probs"] for s in selector.round_stats], dtype=np.float64).reshape(-1, selector.num_arms)
