"""Per-sample mean response NLL from one forward pass; the same numbers train the model and feed IDU."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def collate(rows: list[tuple[np.ndarray, np.ndarray]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad (input_ids, assistant_mask) rows into tensors."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, m) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.from_numpy(np.asarray(ids, dtype=np.int64))
        mask[i, : len(m)] = torch.from_numpy(np.asarray(m, dtype=bool))
        attention[i, : len(ids)] = 1
    return {"input_ids": input_ids, "assistant_mask": mask, "attention_mask": attention}


def response_nll(logits: torch.Tensor, input_ids: torch.Tensor, assistant_mask: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-sample mean NLL over assistant target tokens [B], token count [B]), with the next-token shift.

    The labels are shifted rather than the logits, so the big logits tensor is never copied.
    """
    labels = torch.full_like(input_ids, -100)
    labels[:, :-1] = torch.where(assistant_mask[:, 1:], input_ids[:, 1:], -100)
    token_nll = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), reduction="none").view_as(labels)
    counts = (labels != -100).sum(dim=1).to(token_nll.dtype)
    return token_nll.sum(dim=1) / counts.clamp_min(1), counts
