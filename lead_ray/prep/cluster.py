"""Arms: faiss k-means on a 1-D score (LEAD's level 1), with arms ordered by centroid so arm 0 is lowest."""

from __future__ import annotations

import numpy as np


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
