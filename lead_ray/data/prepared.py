"""What preparation hands to training: the ingested pool and its enriched table, read-only for every run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PoolSources:
    """Where a Ray actor or Train worker on any node finds the pool folder and the model: local paths on one node,
    or their uploaded copies in the run's cloud storage (`storage`), staged node-locally by runtime.storage.stage
    into `cache_dir`."""

    pool: str
    model: str
    cache_dir: str
    storage: str = ""  # the run's cloud storage URI; "" when the run is a local folder


@dataclass
class PreparedPool:
    """The outputs of ingest + prepare, read-only for every training run (or Tune trial) that uses them."""

    pool_dir: Path
    enriched: Path
    model_path: str
    sources: PoolSources | None = None  # None: the local paths, on this node

    def __post_init__(self) -> None:
        if self.sources is None:
            self.sources = PoolSources(str(self.pool_dir), self.model_path, "")
