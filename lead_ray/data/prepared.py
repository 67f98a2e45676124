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
