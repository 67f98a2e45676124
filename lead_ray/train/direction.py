"""ḡ and u for ΔL′: the round's mean loss gradient and its actual parameter displacement, on the device.

ḡ is summed from the gradients the backward passes already computed (read just before each optimizer step, before
clipping), so ΔL′ costs no extra forward or backward pass: one add per parameter per step, and one copy to the
host per round. Under DDP every rank holds the same averaged gradient, so one rank tracks.

With LoRA on all linear layers of an 8B model, ḡ and u have tens of millions of entries, and the selector keeps
K + 1 pairs of them (in every checkpoint too). Above `sketch_dim` entries both are therefore sent as a CountSketch:
each coordinate is added, with a random sign, into one of `sketch_dim` buckets chosen by a hash fixed for the run.
Inner products, norms and cosines are preserved in expectation, with a standard error of at most √(2/sketch_dim)
·‖a‖‖b‖ (0.0055·‖a‖‖b‖ at the default 65,536), which is all ΔL′ needs.
"""

from __future__ import annotations

import numpy as np
import torch

from lead_ray.train.parallel import full_tensor


def direction_parameters(model: torch.nn.Module, which: str, num_layers: int) -> list[torch.Tensor]:
    """The parameters ΔL′ is measured over: `all` trainable ones, or the `last_block`'s (cheap for full
    fine-tuning of a large model; every trainable one if that block is frozen)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if which == "all":
        return trainable
    marker = f".layers.{num_layers - 1}."
    last = [p for n, p in model.named_parameters() if marker in n and p.requires_grad]
    return last or trainable


def count_sketch(parts: list[torch.Tensor], sketch_dim: int, seed: int = 0) -> torch.Tensor:
    """CountSketch of the concatenation of `parts` (flat float tensors): the same hash for the same part index and
    seed, on every call and every restart, so sketches of different rounds can be compared."""
    out = torch.zeros(sketch_dim, dtype=torch.float32, device=parts[0].device if parts else "cpu")
    for i, x in enumerate(parts):
        gen = torch.Generator(device=x.device).manual_seed(1_000_003 * seed + i)
        bucket = torch.randint(0, sketch_dim, (x.numel(),), generator=gen, device=x.device)
        sign = torch.randint(0, 2, (x.numel(),), generator=gen, device=x.device, dtype=torch.int8) * 2 - 1
        out.index_add_(0, bucket, x.reshape(-1).float() * sign)
    return out


class RoundDirectionTracker:
    def __init__(self, params: list[torch.Tensor], sketch_dim: int = 0, seed: int = 0):
        self.params, self.sketch_dim, self.seed = params, sketch_dim, seed
        self.start_values: list[torch.Tensor] = []
        self.grad_sum: list[torch.Tensor] = []
        self.steps = 0

    def start_round(self) -> None:
        self.start_values = [p.detach().clone() for p in self.params]
        self.grad_sum = [torch.zeros_like(p, dtype=torch.float32) for p in self.params]
        self.steps = 0

    @torch.no_grad()
    def add_step(self) -> None:
        """Call after the step's backward passes, before clipping and `optimizer.step()`."""
        for total, p in zip(self.grad_sum, self.params):
            if p.grad is not None:
                total.add_(p.grad.float())
        self.steps += 1

    @torch.no_grad()
    def end_round(self) -> tuple[np.ndarray, np.ndarray]:
        """(ḡ, u) as flat float32 host arrays: exact, or sketched when they are longer than `sketch_dim`."""
        # under FSDP each rank holds shards: gathered whole here, on every rank (a collective)
        grads = [full_tensor(g) / max(self.steps, 1) for g in self.grad_sum]
        steps = [full_tensor(p.detach().float() - s.float()) for p, s in zip(self.params, self.start_values)]
        self.start_values, self.grad_sum = [], []
        if self.sketch_dim and sum(g.numel() for g in grads) > self.sketch_dim:
            grad, step = (count_sketch(x, self.sketch_dim, self.seed) for x in (grads, steps))
        else:
            grad, step = (torch.cat([t.reshape(-1) for t in x]) for x in (grads, steps))
        return grad.cpu().numpy(), step.cpu().numpy()
