"""A Parquet file on the driver's disk as a Ray Dataset, read by tasks on the driver's node.

Ray Data's `read_parquet` would read a local path from whichever node a read task lands on (a multi-node cluster has
no shared filesystem), and its file listing (Ray 2.60, DataSource V2) ends with a race that prints an
`InterruptedError` traceback from a `ListFiles` actor. Here the driver plans the read from the file's footer
(row groups, about 32 MB each block), and each block streams out in batches of `rows_per_block` rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lead_ray.data.pool import BLOCK_BYTES, parquet_blocks
from lead_ray.runtime.ray_init import reads_on_driver_node


def read_local_parquet(path: Path | str, columns: list[str], rows_per_block: int, block_bytes: int = BLOCK_BYTES):
    """The `columns` of `path`, in file order (with the context's `preserve_order`)."""
    import ray

    pq.ParquetFile(path)  # a missing or unreadable file fails here, on the driver, naming the path
    blocks = parquet_blocks(str(path), block_bytes)
    read = partial(_read_row_groups, columns=columns, rows_per_block=rows_per_block)
    return ray.data.from_items(blocks, override_num_blocks=len(blocks)).map_batches(
        read, batch_size=1, batch_format="pyarrow", **reads_on_driver_node(len(blocks)))


def _read_row_groups(plan: pa.Table, columns: list[str], rows_per_block: int) -> Iterator[pa.Table]:
    block = plan.to_pylist()[0]
    f = pq.ParquetFile(block["path"], pre_buffer=False)  # memory: one batch, not the row groups
    for batch in f.iter_batches(batch_size=rows_per_block, row_groups=range(block["start"], block["end"]),
                                columns=columns):
        yield pa.Table.from_batches([batch])
