"""The selection strategies by name (`selector:` in the config), built over the enriched pool's columns."""

from __future__ import annotations

from typing import Any

import numpy as np

from lead_ray.select.baselines import (
    STATIC_SELECTORS,
    IterativeRescoreSelector,
    StaticSelector,
    baseline_scores,
)
from lead_ray.select.lead import LeadSelector
from lead_ray.select.params import SelectionParams
from lead_ray.select.rounds import RoundBook

STRATEGIES: dict[str, type[RoundBook]] = {"lead": LeadSelector, "iterative_rescore": IterativeRescoreSelector,
                                          **{name: StaticSelector for name in STATIC_SELECTORS}}


def columns_needed(params: SelectionParams) -> list[str]:
    """The enriched columns `build_selector` reads for these parameters."""
    extra = {"longest": ["n_response_tokens"], "static_ifd": ["ifd"]}.get(params.selector, [])
    if params.selector == "lead" and params.utility == "learnable":
        extra = ["ref_loss"]
    if params.ifd_max is not None and "ifd" not in extra:
        extra = [*extra, "ifd"]
    return ["id", "arm", "group", "iu0", *extra]


def build_selector(columns: dict[str, np.ndarray], params: SelectionParams | dict[str, Any]) -> RoundBook:
    """The strategy `params.selector` over the columns (`columns_needed`)."""
    p = params if isinstance(params, SelectionParams) else SelectionParams(**params)
    iu0 = np.asarray(columns["iu0"], dtype=np.float64)
    arm, group = np.asarray(columns["arm"], dtype=np.int64), np.asarray(columns["group"], dtype=np.int64)
    if p.ifd_max is not None:  # an IFD threshold: rows above it are not selectable, as held-out rows are not
        arm = np.where(np.asarray(columns["ifd"], dtype=np.float64) > p.ifd_max, -1, arm)
    kw = p.to_dict()
    if p.selector == "lead":
        reference = np.asarray(columns["ref_loss"], dtype=np.float64) if p.utility == "learnable" else None
        return LeadSelector(iu0, arm, group, reference_loss=reference, **kw)
    if p.selector == "iterative_rescore":
        return IterativeRescoreSelector(iu0, arm, group, **kw)
    return StaticSelector(iu0, arm, group, scores=baseline_scores(p.selector, columns, p.seed), **kw)
