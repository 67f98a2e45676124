"""FSDP's sharded state through a round checkpoint, in a real 2-process gloo group: the full tensors gathered on rank
0 and written as the DDP path writes them, read back into a freshly sharded model and optimizer, must continue
training exactly as the model that never stopped. LoRA (only adapters trainable) and full fine-tuning."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2


def _model(lora: bool) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    from lead_ray.models.load import for_training

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return for_training(LlamaForCausalLM(config), {"rank": 4, "alpha": 8, "dropout": 0.0} if lora else None)


def _step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> float:
    x = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(seed))
    loss = model(input_ids=x, labels=x).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def _worker(rank: int, port: int, lora: bool, folder: str, results) -> None:
    from lead_ray.train.checkpoint import load_training_state, save_training_state
    from lead_ray.train.parallel import restore_training_state as restore
    from lead_ray.train.parallel import training_state, wrap_model

    dist.init_process_group("cpu:gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        def fresh():
            model = wrap_model(_model(lora), "fsdp", torch.device("cpu"), use_bf16=False)
            return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)

        model, optimizer = fresh()
        losses = [_step(model, optimizer, s) for s in range(2)]
        state = training_state(model, optimizer, "fsdp", rank)
        if rank == 0:
            save_training_state(Path(folder), *state, selection_rounds=2, step=2, nll_before=1.0)
            results["names"] = sorted(state[0])
        dist.barrier()
        saved = load_training_state(Path(folder))  # every rank reads the files
        again, again_opt = fresh()
        restore(again, again_opt, "fsdp", saved["weights"], saved["optimizer"])
        # the first step's loss checks the weights; the second's, the AdamW moments the first step used
        kept = [_step(model, optimizer, s) for s in (7, 8)]
        results[rank] = (losses, kept, [_step(again, again_opt, s) for s in (7, 8)])
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("lora", [True, False])
def test_fsdp_checkpoint_round_trip(lora: bool) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(_worker, args=(port, lora, folder, results), nprocs=WORLD, join=True)
    trainable = sorted(n for n, p in _model(lora).named_parameters() if p.requires_grad)
    assert results["names"] == trainable  # full tensors under the DDP path's names; only the adapters with LoRA
    assert all(("lora_" in n) == lora for n in trainable)
    for rank in range(WORLD):
        losses, kept, restored = results[rank]
        assert losses[1] < losses[0] + 1.0  # it trained
        assert restored == pytest.approx(kept, rel=1e-6, abs=1e-7)  # the restored model takes the same steps
