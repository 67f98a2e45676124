"""ḡ and u for ΔL′: the round's mean loss gradient and its actual parameter displacement, on the device.

ḡ is summed from the gradients the backward passes already computed (read just before each optimizer step, before
clipping), so ΔL′ costs no extra forward or backward pass: one add per parameter per step, and one copy to the
host per round. Under DDP every rank holds the same averaged gradient, so one rank tracks.
"""

from __future__ import annotations

import numpy as np
import torch


def direction_parameters(model: torch.nn.Module, which: str, num_layers: int) -> list[torch.Tensor]:
    """The parameters ΔL′ is measured over: `all` trainable ones, or the `last_block`'s (cheap for full
    fine-tuning of a large model; every trainable one if that block is frozen)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if which == "all":
        return trainable
    marker = f".layers.{num_layers - 1}."
    last = [p for n, p in model.named_parameters() if marker in n and p.requires_grad]
    return last or trainable


class RoundDirectionTracker:
    def __init__(self, params: list[torch.Tensor]):
        self.params = params
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
        """(ḡ, u) as flat float32 host arrays."""
        grad = torch.cat([g.reshape(-1) for g in self.grad_sum]) / max(self.steps, 1)
        step = torch.cat([(p.detach().float() - s.float()).reshape(-1) for p, s in zip(self.params, self.start_values)])
        self.start_values, self.grad_sum = [], []
        return grad.cpu().numpy(), step.cpu().numpy()
