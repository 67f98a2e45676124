"""Memory-mapped Arrow IPC store of tokenized rows: id == row index, so access by id is O(1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

STORE_SCHEMA = pa.schema([("id", pa.int64()), ("input_ids", pa.list_(pa.int32())),
                          ("assistant_mask", pa.list_(pa.int8()))])


class RowStore:
    """Read-only view of `pool.arrow`; the file is memory-mapped, so workers share the page cache."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"pool store {self.path} does not exist; run the ingest stage first")
        self.table = pa.ipc.open_file(pa.memory_map(str(self.path), "r")).read_all().combine_chunks()
        self._ids = self.table.column("input_ids").chunk(0)
        self._mask = self.table.column("assistant_mask").chunk(0)
        self._offsets = self._ids.offsets.to_numpy()
        self._flat_ids = self._ids.values.to_numpy(zero_copy_only=True)
        self._flat_mask = self._mask.values.to_numpy(zero_copy_only=True)

    def __len__(self) -> int:
        return self.table.num_rows

    def get(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, assistant_mask) of row `idx`, as zero-copy views into the mapped file."""
        a, b = self._offsets[idx], self._offsets[idx + 1]
        return self._flat_ids[a:b], self._flat_mask[a:b]

    def lengths(self) -> np.ndarray:
        return np.diff(self._offsets)


class StoreWriter:
    """Appends record batches to an Arrow IPC file (written to a temp name, renamed on close)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.tmp = self.path.with_suffix(".arrow.partial")
        self.sink = pa.OSFile(str(self.tmp), "wb")
        self.writer = pa.ipc.new_file(self.sink, STORE_SCHEMA)

    def write(self, ids: np.ndarray, input_ids: list, masks: list) -> None:
        batch = pa.record_batch([pa.array(ids, pa.int64()), pa.array(input_ids, pa.list_(pa.int32())),
                                 pa.array(masks, pa.list_(pa.int8()))], schema=STORE_SCHEMA)
        self.writer.write_batch(batch)

    def close(self) -> None:
        self.writer.close()
        self.sink.close()
        self.tmp.rename(self.path)
