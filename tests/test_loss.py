"""The per-sample response NLL must equal Hugging Face's own shifted loss on the same tokens."""

from __future__ import annotations

import numpy as np
import torch

from lead_ray.data.tokenize import tokenize_messages
from lead_ray.models.load import load_model, load_tokenizer
from lead_ray.models.nll import collate, response_nll, target_tokens


def test_response_nll_matches_hf_shifted_loss(tiny_model_path: str) -> None:
    tok = load_tokenizer(tiny_model_path)
    model = load_model(tiny_model_path).eval()
    convs = [[{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "2 + 3 = 5"}],
             [{"role": "user", "content": "Name a Python keyword."},
              {"role": "assistant", "content": "The keyword `lambda` makes an anonymous function."}]]
    rows = [tokenize_messages(tok, m, 128) for m in convs]
    batch = collate(rows, tok.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        nll, counts = response_nll(logits, batch["input_ids"], batch["assistant_mask"])
        for i, (ids, mask) in enumerate(rows):
            input_ids = torch.from_numpy(ids.astype(np.int64))[None]
            labels = input_ids.clone()
            labels[0, ~torch.from_numpy(mask.astype(bool))] = -100
            reference = model(input_ids=input_ids, labels=labels).loss  # HF shifts labels internally
            assert torch.allclose(nll[i], reference, atol=1e-5), (nll[i], reference)
            assert counts[i] == mask[1:].sum() == target_tokens(mask)  # targets are positions 1..n-1
    assert nll.shape == (2,) and not torch.allclose(nll[0], nll[1])


def test_bf16_keeps_frozen_weights_in_bf16_and_trains_float32(tiny_model_path: str) -> None:
    lora = {"rank": 4, "alpha": 8, "dropout": 0.0}
    model = load_model(tiny_model_path, dtype=torch.bfloat16, lora=lora)
    dtypes = {(p.requires_grad, p.dtype) for p in model.parameters()}
    assert dtypes == {(False, torch.bfloat16), (True, torch.float32)}  # LoRA adapters: float32 master weights
    full = load_model(tiny_model_path, dtype=torch.bfloat16)  # full fine-tuning: every weight is trained
    assert {p.dtype for p in full.parameters()} == {torch.float32}
    assert {p.dtype for p in load_model(tiny_model_path, lora=lora).parameters()} == {torch.float32}
