"""Data parallelism for the training loop: DDP (every rank a full replica) or FSDP (PyTorch's FSDP2 `fully_shard`:
weights, gradients and optimizer state sharded over the ranks, so a model whose training state does not fit one GPU
still trains). The loop calls the same five functions under either.

Under FSDP every forward pass is a collective: all ranks must run the same number of them, which `evaluate` and
`rescore` in the loop ensure. Checkpoints and the final model hold full (unsharded) tensors in the same files as
under DDP, gathered on rank 0's host memory (`ignore_frozen_params`: a LoRA checkpoint gathers only the adapters).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

STRATEGIES = ("ddp", "fsdp")


def effective_strategy(strategy: str, world: int) -> str:
    """One worker has nothing to shard over: it trains as DDP's single replica."""
    return strategy if world > 1 else "ddp"


def wrap_model(base: torch.nn.Module, strategy: str, device: torch.device, use_bf16: bool) -> torch.nn.Module:
    """The model the loop trains: `base` in DDP (Ray Train's prepare_model), or `base` itself, sharded in place by
    decoder layer, then as a whole (bf16 weights in the forward and backward passes, fp32 gradient reduction, when
    `use_bf16`)."""
    if strategy == "ddp":
        import ray.train.torch

        return ray.train.torch.prepare_model(base)
    import torch.distributed as dist
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    base.to(device)
    if dist.is_initialized():  # as DDP does at construction: rank 0's values everywhere (LoRA's init is random)
        for p in base.parameters():
            if p.requires_grad:
                dist.broadcast(p.data, src=0)
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if use_bf16 else \
        MixedPrecisionPolicy()
    inner = base.get_base_model() if hasattr(base, "get_base_model") else base  # a peft model's transformer
    blocks = set(getattr(inner, "_no_split_modules", None) or [])  # Hugging Face's decoder layer class names
    for module in base.modules():
        if type(module).__name__ in blocks:
            fully_shard(module, mp_policy=policy)
    fully_shard(base, mp_policy=policy)
    return base


def gradient_sync(model: torch.nn.Module, strategy: str, world: int, enabled: bool) -> contextlib.AbstractContextManager:
    """Gradients are reduced over ranks only on a step's last micro-batch (`enabled`)."""
    if world == 1 or enabled:
        if strategy == "fsdp" and world > 1:
            model.set_requires_gradient_sync(True)
        return contextlib.nullcontext()
    if strategy == "fsdp":
        model.set_requires_gradient_sync(False)
        return contextlib.nullcontext()
    return model.no_sync()


def _options(**kwargs: Any):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def training_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, strategy: str, rank: int
                   ) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """(trainable weights by parameter name, optimizer state) as full CPU tensors on rank 0, None elsewhere. A
    collective under FSDP: every rank calls it."""
    if strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        weights = get_model_state_dict(model, options=_options(cpu_offload=True, ignore_frozen_params=True))
        optim = get_optimizer_state_dict(model, optimizer, options=_options(cpu_offload=True))
        names = {n for n, p in model.named_parameters() if p.requires_grad}  # a tied weight once, as under DDP
        return ({k: v.contiguous() for k, v in weights.items() if k in names}, optim) if rank == 0 else None
    if rank != 0:
        return None
    module = getattr(model, "module", model)  # DDP's replica
    return trainable_weights(module), optimizer.state_dict()


def trainable_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def restore_training_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, strategy: str,
                        weights: dict[str, torch.Tensor], optim: dict[str, Any]) -> None:
    """Put a `training_state` (read on every rank) back into the model and optimizer; a collective under FSDP."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    missing = names - set(weights)
    if missing:
        raise RuntimeError(f"the checkpoint lacks {len(missing)} trainable tensors, e.g. {sorted(missing)[0]}")
    if strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

        set_model_state_dict(model, weights, options=_options(strict=False))
        set_optimizer_state_dict(model, optimizer, optim, options=_options())
        return
    getattr(model, "module", model).load_state_dict(weights, strict=False)
    optimizer.load_state_dict(optim)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A sharded (DTensor) tensor gathered whole on every rank (a collective); any other tensor as it is."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t
