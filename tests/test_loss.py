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


def _whole_batch_nll(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The earlier definition, one fp32 cross-entropy over the whole batch: what chunking must reproduce."""
    labels = torch.full_like(input_ids, -100)
    labels[:, :-1] = torch.where(mask[:, 1:], input_ids[:, 1:], -100)
    token = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), reduction="none")
    token = token.view_as(labels)
    return token.sum(dim=1) / (labels != -100).sum(dim=1).clamp_min(1)


def test_chunked_nll_matches_the_whole_batch_with_its_gradients() -> None:
    gen = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, 50, (3, 11), generator=gen)
    mask = torch.rand(3, 11, generator=gen) > 0.4
    mask[2] = False  # a row without targets: NLL 0, count 0
    weights = torch.tensor([1.0, -2.0, 3.0])
    for dtype in (torch.float32, torch.bfloat16):
        base = torch.randn(3, 11, 50, generator=gen).to(dtype)
        grads, values = [], []
        for fn in (lambda x: _whole_batch_nll(x, input_ids, mask),
                   lambda x: response_nll(x, input_ids, mask, chunk_tokens=7)[0]):  # 33 positions: 5 chunks
            logits = base.clone().requires_grad_(True)
            nll = fn(logits)
            (nll * weights).sum().backward()
            values.append(nll.detach())
            grads.append(logits.grad.float())
        torch.testing.assert_close(values[1], values[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-5)
        assert values[1][2] == 0 and grads[1][2].abs().sum() == 0
    with torch.no_grad():  # without autograd nothing is recomputed, and the values are the same
        logits = torch.randn(3, 11, 50, generator=gen)
        torch.testing.assert_close(response_nll(logits, input_ids, mask, chunk_tokens=4)[0],
                                   _whole_batch_nll(logits, input_ids, mask), atol=1e-6, rtol=1e-6)


def _loss_and_grads(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[float, list[torch.Tensor]]:
    model.train()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    nll, counts = response_nll(logits, batch["input_ids"], batch["assistant_mask"])
    loss = (nll * counts).sum() / counts.sum()
    loss.backward()
    return float(loss.detach()), [p.grad.clone() for p in model.parameters() if p.requires_grad]


def test_memory_options_keep_the_loss_and_gradients(tiny_model_path: str) -> None:
    tok = load_tokenizer(tiny_model_path)
    convs = [[{"role": "user", "content": f"What is {a} + {a}?"}, {"role": "assistant", "content": f"{2 * a}"}]
             for a in (3, 41, 512)]
    batch = collate([tokenize_messages(tok, m, 64) for m in convs], tok.pad_token_id)
    lora = {"rank": 4, "alpha": 8, "dropout": 0.0}
    for adapter in (None, lora):
        torch.manual_seed(0)
        plain = load_model(tiny_model_path, lora=adapter, attn_implementation="eager")
        torch.manual_seed(0)  # the same LoRA initialisation
        other = load_model(tiny_model_path, lora=adapter, attn_implementation="sdpa", gradient_checkpointing=True)
        assert other.is_gradient_checkpointing and not plain.is_gradient_checkpointing
        assert other.config._attn_implementation == "sdpa" and plain.config._attn_implementation == "eager"
        loss0, grads0 = _loss_and_grads(plain, batch)
        loss1, grads1 = _loss_and_grads(other, batch)
        assert abs(loss0 - loss1) < 1e-5
        assert len(grads0) == len(grads1) > 0 and any(g.abs().sum() > 0 for g in grads1)
        for a, b in zip(grads0, grads1, strict=True):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)


def test_an_unavailable_attention_is_one_clear_error(tiny_model_path: str) -> None:
    import importlib.util

    import pytest

    from lead_ray.models.load import ModelError, check_model

    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here")
    with pytest.raises(ModelError, match="attn_implementation='flash_attention_2' is not available"):
        load_model(tiny_model_path, attn_implementation="flash_attention_2")  # in a worker
    with pytest.raises(ModelError, match="needs the flash-attn package"):
        check_model(tiny_model_path, attn_implementation="flash_attention_2")  # on the driver, before any Ray work
    check_model(tiny_model_path, attn_implementation="sdpa")


def test_a_lora_rank_above_the_hidden_size_is_refused_on_the_driver(tiny_model_path: str) -> None:
    """lora_rank=1000000000 was accepted and failed only inside training."""
    import pytest
    from transformers import AutoConfig

    from lead_ray.models.load import ModelError, check_model

    hidden = AutoConfig.from_pretrained(tiny_model_path).hidden_size
    check_model(tiny_model_path, lora_rank=hidden)
    with pytest.raises(ModelError, match=rf"'lora_rank': {hidden + 1} exceeds the hidden size of .* \({hidden}\)"):
        check_model(tiny_model_path, lora_rank=hidden + 1)


def test_truncated_weights_are_refused_on_the_driver(tiny_model_path: str, tmp_path) -> None:
    """A truncated model.safetensors passed every driver check and then failed on every Train worker at every
    retry (max_failures + 1 tracebacks); now it is one line before any Ray work."""
    import shutil

    import pytest

    from lead_ray.models.load import ModelError, check_model

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_path, folder)
    check_model(str(folder))  # the copy is whole
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelError, match=r"model weights .*model.safetensors cannot be read \(.*\); is the file "
                                         r"complete\?") as e:
        check_model(str(folder))
    assert "\n" not in str(e.value)
