"""What the pool is made of (owned by `lead_ray.data`): files, limits, the held-out split, deduplication."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lead_ray.config.fields import arg

DEMO_DATA = Path(__file__).resolve().parents[1] / "demo_data"


@dataclass(frozen=True)
class DataArgs:
    data_files: list[str] = arg(help="files or folders (JSON, JSONL, Parquet); `builtin:demo` is the bundled pool",
                                factory=lambda: [str(DEMO_DATA)], doc_default="builtin:demo")
    max_length: int = arg(256, "token limit; longer rows are quarantined", ge=16)
    max_samples: int | None = arg(None, "a cap on the pool rows kept (in ingest order), for quick runs", ge=1)
    eval_fraction: float = arg(0.05, "held-out share, by id hash; never selected", ge=0.0, lt=1.0)
    dedup: str = arg("exact", "`exact`: a row with the same messages as an earlier row is quarantined (reason "
                     "`duplicate`); `none`: kept, and counted", choices=("exact", "none"))
    preprocessing_num_workers: int = arg(1, "tokenizer actors in ingest (as in HF's run_clm); the pool and its ids "
                                         "are the same for any value", ge=1, le=100_000, operational=True)
