"""Ingest that scales out: files cut into blocks, tokenized in parallel, streamed back in input order.

The pool (its ids, rows, tokens, splits and quarantine) must not depend on the block size or the number of
tokenizer actors, and every byte and line of the input must land in exactly one block.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lead_ray.data.pool import KeySet, _split_file, discover_files, ingest, plan_blocks, read_block
from lead_ray.data.store import RowStore
from tests.conftest import REPO


def _jsonl(path: Path) -> bytes:
    rows = [json.dumps({"instruction": f"What is {i} + {i}?", "output": f"{2 * i}"}) for i in range(40)]
    rows[5] = rows[3]  # an exact duplicate
    rows[7] = '{"instruction": "cut'  # invalid JSON
    rows[9] = json.dumps({"instruction": "long " + "word " * 60, "output": "x"})  # longer than a small block
    data = b"\xef\xbb\xbf" + "\n".join(rows[:20]).encode() + b"\n\n  \n" + b'{"instruction": "caf\xe9"}\n'
    data += ("\n".join(rows[20:]) + "\n").encode()
    path.write_bytes(data)
    return data


def _parquet(path: Path) -> None:
    msgs = [[{"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": w}] for w in "abcdefg"]
    table = pa.table({"messages": msgs, "source": ["pq"] * 7})
    pq.write_table(table, path, row_group_size=2)  # 4 row groups


def test_blocks_cover_every_byte_and_number_lines_as_the_whole_file(tmp_path: Path) -> None:
    data = _jsonl(tmp_path / "a.jsonl")
    _parquet(tmp_path / "b.parquet")
    (tmp_path / "c.parquet").write_bytes(b"PAR1 not really")
    files = [str(tmp_path / n) for n in ("a.jsonl", "b.parquet", "c.parquet")]
    blocks = plan_blocks(files, block_bytes=100)
    jsonl = [b for b in blocks if b["path"] == files[0]]
    assert len(jsonl) > 10 and jsonl[0]["start"] == 0 and jsonl[-1]["end"] == len(data)
    for b, nxt in zip(jsonl, jsonl[1:]):
        assert b["end"] == nxt["start"] and data[b["end"] - 1 : b["end"]] == b"\n"  # cut just after a newline
        assert nxt["first_line"] == data[: nxt["start"]].count(b"\n") + 1
    assert any(b["end"] - b["start"] > 100 for b in jsonl)  # the long line makes a longer block, not a cut line
    parquet = [b for b in blocks if b["path"] == files[1]]
    assert [(b["start"], b["end"], b["first_line"]) for b in parquet] == [(0, 1, 1), (1, 2, 3), (2, 3, 5), (3, 4, 7)]
    assert [b["kind"] for b in blocks if b["path"] == files[2]] == ["file"]  # unreadable footer: one block
    for f in files:  # block by block, the same records (line numbers included) as the whole file at once
        got = [r for b in blocks if b["path"] == f for r in read_block(b)]
        assert got == _split_file(f, Path(f).read_bytes()) and got


def test_key_set_matches_a_python_set() -> None:
    rng = np.random.default_rng(0)
    seen: set[int] = set()
    keys = KeySet()
    for size in [1, 5, 200, 3, 1000, 17, 4000, 2, 600]:
        batch = rng.integers(0, 3000, size)  # many repeats, within and across batches
        want = []
        for k in batch.tolist():
            want.append(k in seen)
            seen.add(k)
        np.testing.assert_array_equal(keys.add(batch), want)
    assert sum(len(r) for r in keys.runs) == len(seen) and len(keys.runs) <= 12  # merged, never duplicated
    assert all((k in keys) == (k in seen) for k in range(0, 3000, 7))


def test_the_pool_is_the_same_for_any_block_size_and_worker_count(ray_local, tiny_model_path: str,
                                                                   tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    _jsonl(tmp_path / "in" / "a.jsonl")
    _parquet(tmp_path / "in" / "b.parquet")
    (tmp_path / "in" / "c.json").write_text(json.dumps([{"instruction": "Hi?", "output": "Hello."}, {"x": 1}]))
    files = discover_files([str(tmp_path / "in")])
    one = ingest(files, tiny_model_path, tmp_path / "one", max_length=64, eval_fraction=0.3)
    many = ingest(files, tiny_model_path, tmp_path / "many", max_length=64, eval_fraction=0.3, block_bytes=100,
                  concurrency=2)
    assert one == many.__class__(**{**many.__dict__, "pool_dir": one.pool_dir})
    assert one.read == one.kept + one.quarantined and one.duplicates == 1 and one.quarantined >= 5
    for name in ("pool.parquet", "quarantine.parquet"):
        assert pq.read_table(tmp_path / "one" / name).equals(pq.read_table(tmp_path / "many" / name)), name
    ids = pq.read_table(tmp_path / "one" / "pool.parquet").column("id").to_numpy()
    assert ids.tolist() == list(range(one.kept))
    a, b = RowStore(tmp_path / "one" / "pool.arrow"), RowStore(tmp_path / "many" / "pool.arrow")
    assert len(a) == len(b) == one.kept
    for i in range(one.kept):
        for x, y in zip(a.get(i), b.get(i)):
            np.testing.assert_array_equal(x, y)


def test_a_corrupt_row_group_is_one_quarantined_record(tmp_path: Path) -> None:
    """A readable footer with corrupt pages behind it: that block becomes one record with the reason, not a crash."""
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"instruction": [f"Q{i}" for i in range(1000)], "output": ["A"] * 1000}), path)
    data = bytearray(path.read_bytes())
    data[4:40] = b"\x7f" * 36  # the first data page
    path.write_bytes(bytes(data))
    blocks = plan_blocks([str(path)])
    assert [b["kind"] for b in blocks] == ["row_groups"]
    records = read_block(blocks[0])
    assert len(records) == 1 and records[0]["line"] == 1
    assert records[0]["error"].startswith("unreadable Parquet row groups 0..0 (rows from 1): ")


def test_a_local_parquet_file_reads_back_whole_and_in_order(ray_local, tmp_path: Path) -> None:
    """read_local_parquet (embed and cluster assignment): every row once, in file order, only the asked columns,
    for blocks of one or several row groups and batches that do not divide them."""
    from lead_ray.data.local_parquet import read_local_parquet

    n = 1000
    table = pa.table({"id": np.arange(n, dtype=np.int64), "text": [f"row {i}" for i in range(n)],
                      "other": np.ones(n)})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=128)  # 8 row groups, the last one short
    for block_bytes, rows_per_block in ((1, 50), (3000, 128), (1 << 30, 999)):
        ds = read_local_parquet(tmp_path / "t.parquet", ["id", "text"], rows_per_block, block_bytes=block_bytes)
        ds.context.execution_options.preserve_order = True
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = pa.concat_tables(ds.iter_batches(batch_size=None, batch_format="pyarrow"))
        assert not [w for w in caught if "concurrent tasks" in str(w.message)], block_bytes  # one block, one task
        assert got.column_names == ["id", "text"]
        assert got.column("id").to_pylist() == list(range(n)), block_bytes
        assert got.column("text").to_pylist() == table.column("text").to_pylist()


def test_the_drivers_reads_run_at_most_one_per_core(ray_local) -> None:
    """Reads take no CPU slot, so only their task pool bounds them: never more tasks than cores, nor than inputs."""
    from lead_ray.runtime.ray_init import reads_on_driver_node

    cores = os.cpu_count() or 1
    assert [reads_on_driver_node(n)["compute"].size for n in (0, 1, cores, 31 * cores)] == [1, 1, cores, cores]
    assert reads_on_driver_node(5)["num_cpus"] == 0


ZERO_CPU_HEAD = """
import sys
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from lead_ray.data.local_parquet import read_local_parquet
from lead_ray.data.pool import discover_files, ingest

tmp, tokenizer = Path(sys.argv[1]), sys.argv[2]
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
cluster.add_node(num_cpus=2)
ray.init(address=cluster.address)
summary = ingest(discover_files([str(tmp / "in")]), tokenizer, tmp / "pool", max_length=64, eval_fraction=0.3,
                 block_bytes=100)
rows = read_local_parquet(tmp / "pool" / "pool.parquet", ["id"], 3, block_bytes=1).count()
print("KEPT", summary.kept, "READ", rows)
ray.shutdown()
cluster.shutdown()
"""


def test_the_drivers_reads_run_on_a_head_without_cpus(tiny_model_path: str, tmp_path: Path) -> None:
    """A head started with --num-cpus=0 (common on clusters) runs the driver; the reads of its files are pinned to
    it, so they must take no CPU slot, or they could never be scheduled. A cluster of its own, in a subprocess."""
    (tmp_path / "in").mkdir()
    _jsonl(tmp_path / "in" / "a.jsonl")
    proc = subprocess.run([sys.executable, "-c", ZERO_CPU_HEAD, str(tmp_path), tiny_model_path], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    kept = len(pq.read_table(tmp_path / "pool" / "pool.parquet"))
    assert f"KEPT {kept} READ {kept}" in proc.stdout and kept > 30
