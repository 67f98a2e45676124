"""The base model's per-row response NLL (IU, the initial IDU): one batched pass in Ray Data map_batches."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


class NLLScorer:
    """Ray Data callable: loads the model once per actor, returns `iu0` per row (HF backend)."""

    def __init__(self, model_path: str, store_path: str, batch_tokens: int = 4096, trust_remote_code: bool = False,
                 threads_divisor: int = 1):
        import os

        import torch

        from lead_ray.data.store import RowStore
        from lead_ray.train.model import load_model

        self.torch = torch
        if not torch.cuda.is_available():  # Ray pins OMP threads to the actor's 1 CPU; use this node's share
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // threads_divisor))
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.model = load_model(model_path, trust_remote_code=trust_remote_code, dtype=dtype).to(self.device).eval()
        self.pad_id = self.model.config.pad_token_id or 0
        self.store = RowStore(store_path)
        self.batch_tokens = batch_tokens

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from lead_ray.train.loss import collate, response_nll

        ids = batch["id"].astype(np.int64)
        out = np.zeros(len(ids), dtype=np.float32)
        order = np.argsort(self.store.lengths()[ids])  # similar lengths together: little padding
        step = max(1, self.batch_tokens // int(self.store.lengths()[ids].max()))
        with self.torch.inference_mode():
            for s in range(0, len(order), step):
                pick = order[s : s + step]
                t = collate([self.store.get(int(i)) for i in ids[pick]], self.pad_id)
                logits = self.model(input_ids=t["input_ids"].to(self.device),
                                    attention_mask=t["attention_mask"].to(self.device)).logits
                nll, _ = response_nll(logits, t["input_ids"].to(self.device), t["assistant_mask"].to(self.device))
                out[pick] = nll.float().cpu().numpy()
        return {"id": ids, "iu0": out}


def score_pool(pool_dir: Path, model_path: str, *, batch_size: int, concurrency: int,
               trust_remote_code: bool = False, num_gpus: float = 0) -> np.ndarray:
    """iu0 for every pool row, indexed by id."""
    import ray

    n = pq.ParquetFile(pool_dir / "pool.parquet").metadata.num_rows
    ds = ray.data.read_parquet(str(pool_dir / "pool.parquet"), columns=["id"],
                               override_num_blocks=max(1, n // max(batch_size, 1)))  # blocks stream: progress
    ds = ds.map_batches(NLLScorer, fn_constructor_args=(model_path, str(pool_dir / "pool.arrow")),
                        fn_constructor_kwargs={"trust_remote_code": trust_remote_code, "threads_divisor": concurrency},
                        batch_size=batch_size, concurrency=concurrency, num_gpus=num_gpus or None,
                        batch_format="numpy")
    iu0 = np.full(n, np.nan, dtype=np.float32)
    done, t0, last = 0, time.time(), 0.0
    for b in ds.iter_batches(batch_size=None, batch_format="numpy"):
        iu0[b["id"]] = b["iu0"]
        done += len(b["id"])
        if time.time() - last > 15 or done == n:
            last = time.time()
            print(f"[lead-ray] scoring: {done}/{n} rows ({done / max(last - t0, 1e-9):.1f} rows/s)", flush=True)
    if np.isnan(iu0).any():
        raise RuntimeError(f"scoring lost rows: {int(np.isnan(iu0).sum())} of {n} have no iu0")
    return iu0
