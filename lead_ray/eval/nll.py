"""Held-out response NLL of a model, overall and broken down by source and task group.

The definition is the training loop's (`lead_ray.train.loop.evaluate`), which now calls `batch_response_nll` too:
each row's mean NLL over its assistant target tokens (with the next-token shift, `response_nll`), then a
**token-weighted** mean over rows, i.e. sum over rows of (row NLL x row target tokens) / total target tokens. A
breakdown cell uses the same formula on its own rows, so the overall value is the token-weighted mean of the cells.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from lead_ray.data.store import RowStore
from lead_ray.train.loss import collate, response_nll


def batch_response_nll(model, store: RowStore, ids: np.ndarray, batch_size: int, pad_id: int, device,
                       autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
                       ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(per-row mean response NLL [B], target-token counts [B]) for each batch of `ids`, in order, without grad.

    The one forward-pass core both the training loop's evaluation and `heldout_nll` use, so they cannot drift.
    The caller sets eval/train mode.
    """
    with torch.inference_mode(), autocast():
        for s in range(0, len(ids), batch_size):
            t = collate([store.get(int(i)) for i in ids[s : s + batch_size]], pad_id)
            t = {k: v.to(device) for k, v in t.items()}
            logits = model(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).logits
            yield response_nll(logits, t["input_ids"], t["assistant_mask"])


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
