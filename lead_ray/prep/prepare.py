"""Minimal LEAD preparation: iu0 from the base model, arms by 1-D k-means on iu0, groups = source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lead_ray.prep.cluster import kmeans_1d
from lead_ray.prep.score import score_pool


def prepare(pool_dir: Path, model_path: str, out_path: Path, *, num_arms: int, seed: int, batch_size: int,
            concurrency: int, trust_remote_code: bool = False, num_gpus: float = 0) -> Path:
    pool = pq.read_table(pool_dir / "pool.parquet",
                         columns=["id", "source", "split", "n_prompt_tokens", "n_response_tokens"])
    iu0 = score_pool(pool_dir, model_path, batch_size=batch_size, concurrency=concurrency,
                     trust_remote_code=trust_remote_code, num_gpus=num_gpus)["full"]
    train = pool.column("split").to_numpy(zero_copy_only=False) == "train"
    arm = np.full(pool.num_rows, -1, dtype=np.int64)
    arm[train] = kmeans_1d(iu0[train], num_arms, seed=seed)
    sources = pool.column("source").to_numpy(zero_copy_only=False)
    _, group = np.unique(sources, return_inverse=True)
    table = pa.table({"id": pool.column("id"), "source": pool.column("source"), "split": pool.column("split"),
                      "group": group.astype(np.int64), "arm": arm, "iu0": iu0.astype(np.float64),
                      "n_prompt_tokens": pool.column("n_prompt_tokens"),
                      "n_response_tokens": pool.column("n_response_tokens")})
    out_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out_path)
    return out_path
