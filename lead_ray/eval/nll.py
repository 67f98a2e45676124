"""Held-out response NLL of a model, overall and broken down by source and task group.

The definition is `lead_ray.models.nll`'s, shared with the training loop's evaluation (`batch_response_nll`):
each row's mean NLL over its assistant target tokens (with the next-token shift, `response_nll`), then a
**token-weighted** mean over rows, i.e. sum over rows of (row NLL x row target tokens) / total target tokens. A
breakdown cell uses the same formula on its own rows, so the overall value is the token-weighted mean of the cells.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np

from lead_ray.data.store import RowStore
from lead_ray.models.nll import batch_response_nll


def weighted_nll(nll: np.ndarray, counts: np.ndarray) -> dict[str, Any]:
    """Token-weighted mean NLL of some rows (NaN for none), with how many rows and target tokens it rests on."""
    tokens = float(np.sum(counts))
    value = float(np.sum(nll * counts) / tokens) if tokens else float("nan")
    return {"nll": value, "n": int(len(nll)), "tokens": int(tokens)}


def heldout_nll(model, store: RowStore, ids: np.ndarray, groups: dict[str, np.ndarray], batch_size: int,
                pad_id: int, device, autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
                ) -> dict[str, Any]:
    """Token-weighted held-out NLL of `ids` overall and per label of each breakdown in `groups`.

    `groups` maps a breakdown name (e.g. "source", "group") to labels aligned with `ids`. Returns
    `{"nll", "n", "tokens", "by": {name: {str(label): {"nll", "n", "tokens"}}}, "rows": {"id", "nll", "tokens"}}`;
    the per-row values let a caller recombine or check cells. Pass only eval-split ids: no selector ever sees them.
    """
    ids = np.asarray(ids, dtype=np.int64)
    for name, labels in groups.items():
        if len(labels) != len(ids):
            raise ValueError(f"breakdown {name!r} has {len(labels)} labels for {len(ids)} ids")
    was_training = model.training
    model.eval()
    try:
        parts = [(nll.double().cpu().numpy(), counts.double().cpu().numpy())
                 for nll, counts in batch_response_nll(model, store, ids, batch_size, pad_id, device, autocast)]
    finally:
        model.train(was_training)
    nll = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0)
    counts = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
    out = weighted_nll(nll, counts)
    out["by"] = {}
    for name, labels in groups.items():
        labels = np.asarray(labels)
        out["by"][name] = {str(label): weighted_nll(nll[labels == label], counts[labels == label])
                           for label in sorted(set(labels.tolist()))}
    out["rows"] = {"id": ids.tolist(), "nll": nll.tolist(), "tokens": counts.astype(np.int64).tolist()}
    return out
