"""Per-sample mean response NLL: the one definition that training, scoring and evaluation share.

A row's NLL is the mean, over its assistant target tokens (with the next-token shift), of -log p(token | earlier
tokens). The training forward pass computes it for the loss and for IDU; `batch_response_nll` computes it without
grad for held-out evaluation and re-scoring; preparation scores `scoring_row` sequences (IU and IFD).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


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


LOGITS_CHUNK_ELEMENTS = 2**26  # fp32 logits alive at once: 256 MiB, 512 tokens of a 128k vocabulary


def _token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels, reduction="none")


def response_nll(logits: torch.Tensor, input_ids: torch.Tensor, assistant_mask: torch.Tensor,
                 chunk_tokens: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-sample mean NLL over assistant target tokens [B], token count [B]), with the next-token shift.

    The labels are shifted rather than the logits, so the big logits tensor is never copied. The fp32 log-softmax is
    taken `chunk_tokens` positions at a time (default: LOGITS_CHUNK_ELEMENTS / vocabulary) and, under autograd,
    recomputed chunk by chunk in the backward pass: at 4 × 2,048 tokens and a 128k vocabulary a whole-batch fp32
    copy would be 4.2 GB, plus as much for its gradient.
    """
    labels = torch.full_like(input_ids, -100)
    labels[:, :-1] = torch.where(assistant_mask[:, 1:], input_ids[:, 1:], -100)
    flat, flat_labels = logits.flatten(0, 1), labels.flatten()
    step = chunk_tokens or max(1, LOGITS_CHUNK_ELEMENTS // logits.shape[-1])
    if len(flat_labels) <= step:
        token_nll = _token_nll(flat, flat_labels)
    else:
        recompute = torch.is_grad_enabled() and logits.requires_grad
        token_nll = torch.cat([
            checkpoint(_token_nll, flat[s : s + step], flat_labels[s : s + step], use_reentrant=False) if recompute
            else _token_nll(flat[s : s + step], flat_labels[s : s + step])
            for s in range(0, len(flat_labels), step)])
    token_nll = token_nll.view_as(labels)
    counts = (labels != -100).sum(dim=1).to(token_nll.dtype)
    return token_nll.sum(dim=1) / counts.clamp_min(1), counts


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A collated batch on `device`; to a GPU from pinned memory without blocking, so the copy overlaps the compute
    queued before it."""
    if device.type != "cuda":
        return {k: v.to(device) for k, v in batch.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


def target_tokens(assistant_mask: np.ndarray) -> int:
    """How many target tokens `response_nll` averages over for this row (the mask, shifted by one)."""
    return int(np.count_nonzero(assistant_mask[1:]))


def batch_response_nll(model, store, ids: np.ndarray, batch_size: int, pad_id: int, device,
                       autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
                       ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(per-row mean response NLL [B], target-token counts [B]) for each batch of `ids`, in order, without grad.

    The one forward-pass core both the training loop's evaluation and `heldout_nll` use, so they cannot drift.
    The caller sets eval/train mode.
    """
    with torch.no_grad(), autocast():  # not inference_mode: FSDP's gathered weights must outlive the pass
        for s in range(0, len(ids), batch_size):
            t = to_device(collate([store.get(int(i)) for i in ids[s : s + batch_size]], pad_id), device)
            logits = model(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).logits
            yield response_nll(logits, t["input_ids"], t["assistant_mask"])


MODES = ("full", "response")  # the sequences preparation scores per row


def scoring_row(ids: np.ndarray, mask: np.ndarray, mode: str, start_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, mask of the tokens whose NLL counts) for one row in one mode."""
    if mode == "full":
        return ids, mask
    if mode == "response":  # every assistant token, predicted from the start token and earlier response tokens
        resp = ids[np.asarray(mask, dtype=bool)]
        return (np.concatenate([[start_id], resp]).astype(np.int64),
                np.concatenate([[0], np.ones(len(resp), dtype=np.int8)]).astype(np.int8))
    raise ValueError(f"unknown scoring mode {mode!r}; expected one of {MODES}")


def start_token_id(model_config) -> int:
    """The token a response-only sequence starts with: BOS, else EOS, else 0."""
    for name in ("bos_token_id", "eos_token_id"):
        value = getattr(model_config, name, None)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            return int(value)
    return 0
