"""What preparation hands to training: the ingested pool and its enriched table, read-only for every run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class PreparedPool:
    """The outputs of ingest + prepare, read-only for every training run (or Tune trial) that uses them."""

    pool_dir: Path
    enriched: Path
    model_path: str
    # what Train workers open, through runtime.storage.stage: local paths, or their copies in cloud storage
    pool_source: str = ""
    model_source: str = ""

    def __post_init__(self) -> None:
        self.pool_source = self.pool_source or str(self.pool_dir)
        self.model_source = self.model_source or self.model_path
