"""bench/gpu_check.py runs where no one can debug it cheaply (a few minutes on a lent GPU), so its step is run here on
CPU with a tiny shape: the same code path (model built from a config, for_training, the chunked NLL, AdamW)."""

from __future__ import annotations

import importlib.util
import math

from tests.conftest import REPO


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_step_runs_on_cpu_and_learns() -> None:
    import socket

    import torch.distributed as dist

    gpu_check = _gpu_check()
    lora = {"rank": 4, "alpha": 8, "dropout": 0.0}
    results = {}
    with socket.socket() as s:  # the FSDP setting shards over a one-rank group, as on the one GPU
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("cpu:gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        for name, adapter, ckpt, chunked, fsdp in (("lora+ckpt", lora, True, True, False),
                                                   ("lora, whole batch", lora, False, False, False),
                                                   ("lora, fsdp", lora, True, True, True),
                                                   ("full", None, False, True, False)):
            r = gpu_check.step_check("tiny", name, adapter, ckpt, chunked, steps=3, device="cpu", vocab=512,
                                     batch=2, length=64, fsdp=fsdp)
            assert not r["oom"] and r["tokens_per_s"] > 0 and math.isfinite(r["mfu"]) and len(r["losses"]) == 4
            results[name] = r["losses"]
    finally:
        dist.destroy_process_group()
    # sharded by the loop's FSDP wrapper (bf16 weights in compute, as autocast computes anyway): the same steps
    assert all(abs(a - b) < 2e-2 for a, b in zip(results["lora+ckpt"], results["lora, fsdp"], strict=True))
    # the same model and data: chunked and checkpointed LoRA takes the same steps as the plain one
    assert all(abs(a - b) < 1e-4 for a, b in zip(results["lora+ckpt"], results["lora, whole batch"], strict=True))
    assert abs(results["lora+ckpt"][0] - results["full"][0]) < 1e-4  # the same seeded weights; LoRA B starts at 0
    assert results["full"][-1] < results["full"][0]  # full fine-tuning at lr 1e-5 on one batch: the loss falls


def test_gpu_check_estimates_each_step_as_lead_ray_would() -> None:
    from transformers import LlamaConfig

    from lead_ray.models.memory import GIB, ModelShape, TrainingSetup, estimate_training_memory

    gpu_check = _gpu_check()
    lora = {"rank": 64, "alpha": 16, "dropout": 0.0}
    est = estimate_training_memory(ModelShape.from_config(LlamaConfig(vocab_size=gpu_check.VOCAB,
                                                                      **gpu_check.SHAPES["8b"])),
                                   TrainingSetup(per_device_train_batch_size=4, max_length=2048, lora_rank=64,
                                                 lora_dropout=0.0, bf16=True, gradient_checkpointing=True))
    assert math.isclose(gpu_check.memory_estimate("8b", lora, True), (est.total - est.direction) / GIB)
    # checkpointing keeps each layer's input instead of its activations: 23.5 against 74.7 GiB at 8B
    assert 2 * gpu_check.memory_estimate("8b", lora, True) < gpu_check.memory_estimate("8b", lora, False)
