"""Memory-mapped Arrow IPC store of tokenized rows: id == row index, so access by id is O(1).

The file is never copied into the heap: each record batch stays a view of the mapping, and a row id is found by a
binary search over the batch starts. Every worker and scoring actor on a node shares the same page cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

STORE_SCHEMA = pa.schema([("id", pa.int64()), ("input_ids", pa.list_(pa.int32())),
                          ("assistant_mask", pa.list_(pa.int8()))])


class RowStore:
    """Read-only view of `pool.arrow`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"pool store {self.path} does not exist; run the ingest stage first "
                                    f"(on a multi-node cluster, output_dir must be on storage every node mounts)")
        reader = pa.ipc.open_file(pa.memory_map(str(self.path), "r"))
        self._batches = []
        starts = [0]
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i)
            ids, mask = batch.column("input_ids"), batch.column("assistant_mask")
            self._batches.append((ids.offsets.to_numpy(), ids.values.to_numpy(zero_copy_only=True),
                                  mask.values.to_numpy(zero_copy_only=True)))
            starts.append(starts[-1] + batch.num_rows)
        self._starts = np.asarray(starts, dtype=np.int64)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def get(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, assistant_mask) of row `idx`, as zero-copy views into the mapped file."""
        if not 0 <= idx < len(self):
            raise IndexError(f"row id {idx} is outside the pool (0..{len(self) - 1})")
        b = int(np.searchsorted(self._starts, idx, side="right")) - 1
        offsets, ids, mask = self._batches[b]
        local = idx - self._starts[b]
        lo, hi = offsets[local], offsets[local + 1]
        return ids[lo:hi], mask[lo:hi]

    def lengths(self) -> np.ndarray:
        return np.concatenate([np.diff(o) for o, _, _ in self._batches]) if self._batches else np.zeros(0, np.int64)


class StoreWriter:
    """Appends record batches to an Arrow IPC file (written to a temp name, renamed on close)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.tmp = self.path.with_suffix(".arrow.partial")
        self.sink = pa.OSFile(str(self.tmp), "wb")
        self.writer = pa.ipc.new_file(self.sink, STORE_SCHEMA)

    def write(self, ids: np.ndarray, input_ids: pa.Array | pa.ChunkedArray | list,
              masks: pa.Array | pa.ChunkedArray | list) -> None:
        """Append rows; Arrow list columns are cast in C++, never walked in Python."""
        def column(values, kind: pa.DataType) -> pa.Array:
            values = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values)
            values = values.cast(pa.list_(kind))
            return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values

        batch = pa.record_batch([pa.array(ids, pa.int64()), column(input_ids, pa.int32()), column(masks, pa.int8())],
                                schema=STORE_SCHEMA)
        self.writer.write_batch(batch)

    def close(self) -> None:
        self.writer.close()
        self.sink.close()
        self.tmp.rename(self.path)
