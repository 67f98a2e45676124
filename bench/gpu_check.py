"""GPU check of what a CPU cannot test: the process group's mixed backend, and the training step's memory and speed at
the sizes users bring. Needs torch, transformers and peft only (no Ray), so it runs on a bare CUDA image.

1. `collectives`: 2 processes join a `cpu:gloo,cuda:nccl` group (NCCL must initialise) and run the loop's
   collectives (lead_ray/train/collective.py), whose CPU tensors must travel by gloo. NCCL refuses CPU tensors: under
   a plain `nccl` backend these calls fail, which the check also shows.
2. `step`: one Llama-shaped model built on the GPU from a config (random weights: nothing is downloaded), frozen
   weights in bf16, the step the loop takes (`response_nll` on a bf16 forward, backward, AdamW), at 4 × 2,048 tokens
   and a 128k vocabulary. Per setting: peak memory, tokens/s and MFU, the ratio against the first setting of the
   same model measured in this run, and the host syncs of one step (`torch.cuda.set_sync_debug_mode("warn")`).
   Settings: LoRA r 64 with and without gradient checkpointing, the whole-batch fp32 NLL the loop used before (to
   show what chunking saves), LoRA sharded by the loop's FSDP wrapper (a one-rank group: the code path, not the
   sharding, which needs two GPUs), and full fine-tuning where it fits one GPU.

Usage: python bench/gpu_check.py [--models 1b,8b] [--steps 3]. Prints one line per check, then PASS or FAIL (exit 1),
then the figures as key=value.
"""

from __future__ import annotations

import argparse
import gc
import os
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

SHAPES = {  # Llama-3.2-1B and Llama-3.1-8B
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, tie_word_embeddings=True),
    "tiny": dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, tie_word_embeddings=True),  # tests/test_gpu_check.py, on CPU
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, tie_word_embeddings=False),
}
VOCAB, BATCH, LENGTH = 128_256, 4, 2048
PEAK_TFLOPS = 989.0  # H100/H200 dense bf16, the figure MFU is usually quoted against


def _collective_worker(rank: int, port: int, backend: str, results) -> None:
    import numpy as np

    from lead_ray.select.rounds import RoundPlan
    from lead_ray.train.collective import all_sum, broadcast_flag, broadcast_plan, gather_tokens

    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        sent = RoundPlan(1, np.zeros(5, np.int64), np.arange(5), np.ones(2) / 2)
        plan = broadcast_plan(sent if rank == 0 else None, 2)
        ok = (plan.ids.tolist() == list(range(5)) and broadcast_flag(rank == 0, 2)
              and gather_tokens("ab" * 16, 2) == ["ab" * 16] * 2 and all_sum([1.0], 2) == [2.0])
        results[rank] = "ok" if ok else "wrong values"
    except Exception as e:  # noqa: BLE001 - reported, not raised: the parent prints one line per backend
        results[rank] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    finally:
        dist.destroy_process_group()


def check_collectives() -> bool:
    from lead_ray.train.collective import process_group_backend

    good = True
    for backend, expect in ((process_group_backend(True), "ok"), ("nccl", "fails")):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        results = mp.Manager().dict()
        mp.spawn(_collective_worker, args=(port, backend, results), nprocs=2, join=True)
        outcome = results.get(0, "no result")
        passed = (outcome == "ok") == (expect == "ok")
        good &= passed or expect == "fails"  # a plain nccl that happens to work is not a failure of ours
        print(f"collectives backend={backend}: {outcome} (expected: {expect}) {'PASS' if passed else 'FAIL'}",
              flush=True)
    return good


def build(shape: str, lora: dict | None, checkpointing: bool, device: str = "cuda", vocab: int = VOCAB,
          length: int = LENGTH) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    from lead_ray.models.load import for_training

    config = LlamaConfig(vocab_size=vocab, max_position_embeddings=length, **SHAPES[shape])
    torch.manual_seed(0)  # the same weights for every setting of a shape
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    return for_training(model, lora, checkpointing)


def step_check(shape: str, name: str, lora: dict | None, checkpointing: bool, chunked: bool, steps: int,
               device: str = "cuda", vocab: int = VOCAB, batch: int = BATCH, length: int = LENGTH,
               fsdp: bool = False) -> dict:
    """The loop's training step, `steps` times after one warm-up step: peak memory, tokens/s, MFU, and (on CUDA)
    the host syncs of the last step. `fsdp`: sharded by the loop's own `wrap_model` (needs a process group)."""
    import warnings

    from lead_ray.models.nll import response_nll
    from lead_ray.train.parallel import wrap_model

    cuda = device == "cuda"
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = optimizer = None
    gen = torch.Generator(device=device).manual_seed(0)
    input_ids = torch.randint(0, vocab, (batch, length), device=device, generator=gen)
    mask = torch.zeros(batch, length, dtype=torch.bool, device=device)
    mask[:, length // 4 :] = True  # the response: the last three quarters
    chunk = None if chunked else batch * length  # one chunk: the whole-batch fp32 cross-entropy of before
    times, losses = [], []
    try:
        model = build(shape, lora, checkpointing, device, vocab, length)
        n_params = sum(p.numel() for p in model.parameters())
        if fsdp:
            model = wrap_model(model, "fsdp", torch.device(device), use_bf16=True)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        syncs: list[str] = []
        for k in range(steps + 1):  # the first step warms up; the last one lists its host syncs
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.set_sync_debug_mode("warn" if k == steps else "default")
            t0 = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with torch.autocast(device, dtype=torch.bfloat16):
                    logits = model(input_ids=input_ids).logits
                nll, counts = response_nll(logits, input_ids, mask, chunk_tokens=chunk)
                loss = (nll * counts).sum() / counts.sum()
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if k == steps:
                syncs = sorted({str(w.message).splitlines()[0][:100] for w in caught if "synchroniz" in str(w.message)})
            losses.append(float(loss.detach()))  # a host sync, as the step's end
            del logits, nll, loss
            times.append(time.perf_counter() - t0)
        if cuda:
            torch.cuda.set_sync_debug_mode("default")
    except torch.cuda.OutOfMemoryError:
        return {"name": name, "oom": True, "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
    finally:
        del model, optimizer
    seconds = sum(times[1:]) / steps
    tokens = batch * length
    flops = 6 * n_params * tokens  # the usual model-FLOPs count (recomputation not credited)
    return {"name": name, "oom": False, "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0,
            "tokens_per_s": tokens / seconds, "mfu": flops / seconds / 1e12 / PEAK_TFLOPS, "params_b": n_params / 1e9,
            "losses": losses, "syncs": syncs}


def memory_estimate(shape: str, lora: dict | None, checkpointing: bool) -> float:
    """`lead_ray.models.memory`'s peak for this step, in GiB (no ΔL′ tracker runs here, so without it)."""
    from transformers import LlamaConfig

    from lead_ray.models.memory import GIB, ModelShape, TrainingSetup, estimate_training_memory

    setup = TrainingSetup(per_device_train_batch_size=BATCH, max_length=LENGTH, use_lora=lora is not None,
                          lora_rank=(lora or {}).get("rank", 64), lora_dropout=(lora or {}).get("dropout", 0.0),
                          bf16=True, gradient_checkpointing=checkpointing)
    est = estimate_training_memory(ModelShape.from_config(LlamaConfig(vocab_size=VOCAB, **SHAPES[shape])), setup)
    return (est.total - est.direction) / GIB


def check_steps(models: list[str], steps: int, figures: dict[str, str]) -> bool:
    lora = {"rank": 64, "alpha": 16, "dropout": 0.0}
    settings = [("lora+ckpt", lora, True, True, False), ("lora", lora, False, True, False),
                ("lora+ckpt, whole-batch fp32 NLL", lora, True, False, False),
                ("lora+ckpt, fsdp", lora, True, True, True), ("full+ckpt", None, True, True, False)]
    good = True
    for shape in models:
        first = None
        for name, adapter, ckpt, chunked, fsdp in settings:
            r = step_check(shape, name, adapter, ckpt, chunked, steps, fsdp=fsdp)
            key = f"{shape}_{name.replace(', ', '_').replace('+', '_').replace(' ', '_')}"
            if r["oom"]:
                print(f"step {shape} {name}: out of memory (peak {r['peak_gib']:.1f} GiB)", flush=True)
                good &= name.startswith("full") or not chunked  # LoRA with chunking must fit one GPU
                figures[f"{key}_oom"] = "1"
                continue
            first = first or r
            estimate = memory_estimate(shape, adapter, ckpt) if chunked else None  # the loop's NLL is chunked
            if estimate:  # lead-ray's estimate before training, against this measured peak
                print(f"step {shape} {name}: estimated {estimate:.1f} GiB, {estimate / r['peak_gib']:.2f}x the "
                      f"measured peak", flush=True)
                figures[f"{key}_estimate_ratio"] = f"{estimate / r['peak_gib']:.2f}"
            print(f"step {shape} {name}: peak {r['peak_gib']:.1f} GiB ({r['peak_gib'] / first['peak_gib']:.2f}x), "
                  f"{r['tokens_per_s']:.0f} tokens/s ({r['tokens_per_s'] / first['tokens_per_s']:.2f}x), "
                  f"MFU {100 * r['mfu']:.1f}% ({r['params_b']:.2f}B params, {BATCH}x{LENGTH} tokens); host syncs "
                  f"in a step: {len(r['syncs'])} {r['syncs'][:3]}", flush=True)
            figures.update({f"{key}_peak_gib": f"{r['peak_gib']:.1f}", f"{key}_mfu": f"{r['mfu']:.3f}",
                            f"{key}_host_syncs": str(len(r["syncs"]))})
    return good


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="1b,8b")
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check here")
        return 1
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, {torch.cuda.device_count()} device(s)",
          flush=True)
    good = check_collectives()
    with socket.socket() as s:  # a one-rank group for the FSDP step (the loop's wrap_model)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("cpu:gloo,cuda:nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    figures: dict[str, str] = {}
    good &= check_steps(args.models.split(","), args.steps, figures)
    print("gpu_check: " + ("PASS" if good else "FAIL"), flush=True)
    print(" ".join(f"{k}={v}" for k, v in figures.items()), flush=True)  # the figures, as key=value
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
