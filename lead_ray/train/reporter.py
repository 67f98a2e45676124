"""Per-sample losses → the SelectionService: buffered into batches, sent without waiting, ≤ 1 call in flight."""

from __future__ import annotations

import numpy as np
import ray
import torch


class LossReporter:
    def __init__(self, service, min_batch: int = 64):
        self.service, self.min_batch = service, min_batch
        self.ids: list[np.ndarray] = []
        self.losses: list[torch.Tensor] = []
        self.buffered = 0
        self.pending: ray.ObjectRef | None = None

    def add(self, ids: np.ndarray, losses: torch.Tensor) -> None:
        """Queue this micro-batch's losses; they leave in one call once `min_batch` samples are buffered."""
        self.ids.append(ids)
        self.losses.append(losses.detach())
        self.buffered += len(ids)
        if self.buffered >= self.min_batch:
            self._send()

    def _send(self) -> None:
        if not self.ids:
            return
        if self.pending is not None:
            ray.get(self.pending)  # at most one report in flight per worker
        ids = np.concatenate(self.ids)
        losses = torch.cat(self.losses).float().cpu().numpy()
        self.pending = self.service.report.remote(ids, losses)
        self.ids, self.losses, self.buffered = [], [], 0

    def flush(self) -> None:
        """Send what is buffered and wait until the service has every loss (call before end_round)."""
        self._send()
        if self.pending is not None:
            ray.get(self.pending)
            self.pending = None
