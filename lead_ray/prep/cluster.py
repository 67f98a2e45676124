"""faiss k-means: arms on a 1-D score (LEAD's level 1, ordered by centroid so arm 0 is lowest), and spherical
k-means of instruction embeddings (task groups, or arms by embedding), trained on a sample, assigned in Ray Data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lead_ray.data.local_parquet import read_local_parquet
from lead_ray.prep.embed import embedding_matrix


def kmeans_1d(values: np.ndarray, k: int, seed: int = 0, niter: int = 25) -> np.ndarray:
    """Arm id per value; empty or degenerate inputs fall back to fewer arms, never to an error."""
    import faiss

    x = np.ascontiguousarray(values, dtype=np.float32).reshape(-1, 1)
    k = int(min(k, len(np.unique(x))))
    if k <= 1:
        return np.zeros(len(x), dtype=np.int64)
    km = faiss.Kmeans(1, k, niter=niter, seed=seed, verbose=False, min_points_per_centroid=1)
    km.train(x)
    _, assign = km.index.search(x, 1)
    rank = np.argsort(np.argsort(km.centroids[:, 0]))  # relabel so arms are sorted by centroid
    return rank[assign[:, 0]].astype(np.int64)


def quantile_arms(values: np.ndarray, groups: np.ndarray, k: int) -> np.ndarray:
    """Arm id per value: its quantile bin (k equal bins, arm 0 lowest) inside its own task group. Every arm then
    holds about 1/k of each group, so drawing an arm picks a difficulty level, not a source mix (IFD's scale differs
    by source, which makes 1-D k-means arms mostly sources)."""
    values, groups = np.asarray(values), np.asarray(groups)
    order = np.lexsort((values, groups))
    sorted_groups = groups[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    which = np.repeat(np.arange(len(starts)), sizes)
    rank = np.arange(len(order)) - starts[which]
    arm = np.empty(len(order), dtype=np.int64)
    arm[order] = rank * k // sizes[which]
    return arm


def difficulty_arms(arm_by: str, scores: dict[str, np.ndarray], groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """LEAD's level 1 on a 1-D score: k-means on `ifd` or `iu0`, or `ifd_in_group` quantiles (`quantile_arms`)."""
    if arm_by == "ifd_in_group":
        return quantile_arms(scores["ifd"], groups, k)
    return kmeans_1d(scores[arm_by], k, seed=seed)


def spherical_kmeans(x: np.ndarray, k: int, seed: int = 0, niter: int = 20) -> np.ndarray:
    """Unit-norm centroids (k, dim) of L2-normalised rows; k shrinks to the number of rows if needed."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    k = int(max(1, min(k, len(x))))
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, spherical=True, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=max(256, len(x) // k + 1))
    km.train(x)
    return km.centroids.copy()


def sample_embeddings(path: Path, size: int, seed: int = 0, batch_size: int = 8192) -> np.ndarray:
    """A seeded uniform sample of exactly min(size, rows) rows of an embeddings Parquet, in file order.

    Memory is the sample plus one batch: the rows are read in batches into a preallocated matrix, and the file is
    opened with `pre_buffer=False` (pyarrow's read-ahead otherwise keeps buffers that grow with the file)."""
    f = open_parquet(path)
    n = f.metadata.num_rows
    dim = f.schema_arrow.field("embedding").type.list_size
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(size, n), replace=False))
    out = np.empty((len(rows), dim), dtype=np.float32)
    start = 0
    for batch in f.iter_batches(batch_size=batch_size, columns=["embedding"]):
        lo, hi = np.searchsorted(rows, [start, start + batch.num_rows])
        if hi > lo:
            picked = batch.column(0).take(pa.array(rows[lo:hi] - start))
            out[lo:hi] = picked.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
        start += batch.num_rows
    return out


def open_parquet(path: Path) -> pq.ParquetFile:
    """A Parquet file for streaming reads: without read-ahead buffering, so memory is one batch, not the file."""
    return pq.ParquetFile(path, pre_buffer=False)


class AssignCentroids:
    """Ray Data callable: nearest centroid by inner product (cosine, as rows and centroids are unit-norm)."""

    def __init__(self, centroids: np.ndarray):
        import faiss

        self.index = faiss.IndexFlatIP(centroids.shape[1])
        self.index.add(np.ascontiguousarray(centroids, dtype=np.float32))

    def __call__(self, batch: pa.Table) -> dict[str, np.ndarray]:

        _, nearest = self.index.search(embedding_matrix(batch.column("embedding")), 1)
        return {"id": batch.column("id").to_numpy(), "cluster": nearest[:, 0].astype(np.int64)}


def assign_clusters(embeddings_path: Path, centroids: np.ndarray, n: int, concurrency: int = 1) -> np.ndarray:
    """Cluster id per pool row (indexed by id), assigned in a Ray Data `map_batches` stage."""
    import ray

    ds = read_local_parquet(embeddings_path, ["id", "embedding"], 8192)
    ds = ds.map_batches(AssignCentroids, fn_constructor_args=(centroids,), batch_size=8192, batch_format="pyarrow",
                        compute=ray.data.ActorPoolStrategy(size=concurrency))
    out = np.full(n, -1, dtype=np.int64)
    for b in ds.iter_batches(batch_size=None, batch_format="numpy"):
        out[b["id"]] = b["cluster"]
    if (out < 0).any():
        raise RuntimeError(f"cluster assignment lost rows: {int((out < 0).sum())} of {n}")
    return out
