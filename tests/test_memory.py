"""The memory estimate: exact counts against real models, hand-worked totals, and the estimate against the peak
memory that a real training step takes (in a fresh process, by its peak resident set)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from lead_ray.models.load import for_training
from lead_ray.models.memory import (
    GIB,
    ModelShape,
    TrainingSetup,
    does_not_fit,
    estimate_training_memory,
    memory_table,
    training_memory,
)

SMALL = dict(vocab_size=8192, hidden_size=512, intermediate_size=1376, num_hidden_layers=6, num_attention_heads=8,
             num_key_value_heads=4, tie_word_embeddings=True)


@pytest.mark.parametrize("tied", [True, False])
def test_parameter_counts_match_a_real_model_and_its_lora_adapter(tied):
    config = LlamaConfig(**{**SMALL, "num_hidden_layers": 2, "tie_word_embeddings": tied})
    shape = ModelShape.from_config(config)
    model = LlamaForCausalLM(config)
    assert shape.num_params == sum(p.numel() for p in model.parameters())
    lora = for_training(model, {"rank": 8, "alpha": 16, "dropout": 0.0})
    assert shape.lora_params(8) == sum(p.numel() for p in lora.parameters() if p.requires_grad)


def test_hand_worked_estimate_for_lora_and_fsdp_sharding():
    # h 4, i 8, 1 layer, 2 heads of 2, kv 1 head (kv dim 2), vocab 10, tied
    shape = ModelShape(vocab_size=10, hidden_size=4, intermediate_size=8, num_layers=1, num_heads=2, num_kv_heads=1)
    assert shape.layer_linear_params == 2 * 16 + 2 * 4 * 2 + 3 * 4 * 8  # q,o + k,v + gate,up,down = 144
    assert shape.num_params == 40 + 144 + 8 + 4  # embeddings, linears, 2 layer norms, final norm = 196
    assert shape.lora_params(2) == 2 * ((4 + 4) * 2 + (4 + 2) * 2 + (4 + 8) * 3)  # 2 · 64 = 128
    setup = TrainingSetup(per_device_train_batch_size=1, max_length=3, lora_rank=2, lora_dropout=0.0, bf16=False)
    est = estimate_training_memory(shape, setup)
    assert (est.weights, est.gradients, est.optimizer, est.direction) == (4 * (196 + 128), 4 * 128, 8 * 128, 8 * 128)
    # per token and layer, fp32: 24h + 16i + 8·kv + 28r = 96 + 128 + 16 + 56 = 296; 3 tokens
    assert est.activations == 3 * 296
    # logits 3 × 10 fp32 and their gradient; the fp32 log-softmax and its gradient
    assert est.logits == 2 * 30 * 4 + 8 * 30
    # held throughout, then the larger of the forward's end and the backward's end
    assert est.total == est.weights + est.optimizer + est.direction + 3 * 296 + max(est.logits, est.gradients)

    full = TrainingSetup(per_device_train_batch_size=1, max_length=3, use_lora=False, bf16=False, num_workers=4)
    ddp = estimate_training_memory(shape, full)
    fsdp = estimate_training_memory(shape, TrainingSetup(**{**full.__dict__, "parallel_strategy": "fsdp"}))
    assert (ddp.gradients, ddp.buckets) == (4 * 196, 4 * 196)  # DDP's buckets: a second fp32 copy of the gradients
    assert (fsdp.gradients, fsdp.optimizer) == (4 * 196 // 4, 8 * 196 // 4)
    assert fsdp.total < ddp.total


def test_the_readme_table_comes_from_the_estimate_and_fsdp_and_checkpointing_help():
    table = memory_table()
    assert table in open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8").read()
    rows = {line.split("|")[1].strip(): [float(c) for c in line.split("|")[2:-1]] for line in table.splitlines()[2:]}
    assert all(a > b for a, b in zip(rows["LoRA, DDP"], rows["LoRA, DDP, gradient checkpointing"], strict=True))
    assert all(a > b for a, b in zip(rows["full, DDP"], rows["full, FSDP × 8"], strict=True))


def test_a_run_that_does_not_fit_gets_one_line_with_what_to_change():
    shape = ModelShape.from_config(LlamaConfig(**SMALL))
    est = estimate_training_memory(shape, TrainingSetup(per_device_train_batch_size=4, max_length=256))
    assert does_not_fit(est, est.total) is None
    line = does_not_fit(est, est.total - 1, "a test GPU")
    assert "\n" not in line and "a test GPU" in line and "gradient_checkpointing=true" in line
    assert f"{est.total / GIB:.2f} GiB" in line


def test_training_memory_reads_the_models_config_and_declines_unknown_shapes(tmp_path):
    from lead_ray.config import LeadConfig

    LlamaForCausalLM(LlamaConfig(**{**SMALL, "num_hidden_layers": 1})).save_pretrained(tmp_path / "llama")
    cfg = LeadConfig.from_flat(use_lora=False)
    est = training_memory(str(tmp_path / "llama"), cfg, bf16=False)
    assert est is not None and est.weights == 4 * ModelShape.from_config(LlamaConfig(**{**SMALL,
                                                                                       "num_hidden_layers": 1})).num_params
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 8}))
    assert training_memory(str(tmp_path / "odd"), cfg, bf16=False) is None


MEASURE = r"""
import json, re, sys
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from lead_ray.models.load import for_training
from lead_ray.models.nll import response_nll

def rss(key):
    return int(re.search(key + r":\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

a = json.loads(sys.argv[1])
torch.manual_seed(0)
torch.set_num_threads(1)
config = LlamaConfig(**a["config"], attn_implementation="sdpa")
ids = torch.randint(0, config.vocab_size, (a["batch"], a["length"]))
mask = torch.ones_like(ids, dtype=torch.bool)
before = rss("VmRSS")
model = LlamaForCausalLM(config).to(torch.bfloat16 if a["bf16"] else torch.float32)
model = for_training(model, a["lora"], a["gc"]).train()
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

def step():  # what train/loop.py does for a micro-batch, then the optimizer step
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a["bf16"]):
        nll, _ = response_nll(model(input_ids=ids).logits, ids, mask)
    nll.mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)

step()  # AdamW's state exists from here on
open("/proc/self/clear_refs", "w").write("5")  # reset the peak resident set
step()
print(json.dumps({"peak": rss("VmHWM") - before}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's peak-RSS reset")
@pytest.mark.parametrize("use_lora,bf16,gc,dropout", [
    (False, False, False, 0.0),  # full fine-tuning, fp32
    (False, True, False, 0.0),  # full fine-tuning under bf16 autocast (bf16 copies of the fp32 weights)
    (True, False, False, 0.05),  # LoRA with dropout, fp32
    (True, True, False, 0.05),  # LoRA on bf16 weights, bf16 autocast
    (True, False, True, 0.05),  # LoRA with gradient checkpointing
    (False, False, True, 0.0),  # full fine-tuning with gradient checkpointing
])
def test_estimate_is_within_20_percent_of_a_real_training_steps_peak(use_lora, bf16, gc, dropout):
    # 4 × 256 tokens: in smaller steps fixed costs weigh more (the LoRA bf16 case measured 0.80 of the estimate at
    # 2 × 160 on an idle machine, 0.75 under load; 0.88 at 2 × 256, 0.97 at 4 × 256)
    batch, length, rank = 4, 256, 16
    args = {"config": SMALL, "batch": batch, "length": length, "bf16": bf16, "gc": gc,
            "lora": {"rank": rank, "alpha": 16, "dropout": dropout} if use_lora else None}
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}  # large tensors go back to the system when freed
    out = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(args)], capture_output=True, text=True, env=env,
                         timeout=300, check=True)
    measured = json.loads(out.stdout.strip().splitlines()[-1])["peak"]
    est = estimate_training_memory(ModelShape.from_config(LlamaConfig(**SMALL)), TrainingSetup(
        per_device_train_batch_size=batch, max_length=length, use_lora=use_lora, lora_rank=rank,
        lora_dropout=dropout, bf16=bf16, gradient_checkpointing=gc))
    expected = est.total - est.direction  # the step above runs no ΔL′ tracker
    assert 0.8 <= expected / measured <= 1.2, (expected / GIB, measured / GIB, est.describe())

