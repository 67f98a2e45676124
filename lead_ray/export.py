"""`lead-ray export RUN`: the rows a run selected, as a dataset any trainer takes (TRL, axolotl, LLaMA-Factory).

One row per selected sample: its conversation as `messages` (the form lead-ray ingests every format into, and the
chat format those tools read), where it came from (`source`, `path`, 1-based `line`), and what selection saw: the
rounds it was trained in, the arm and task group, IDU before its first use and after its last, its last training
loss, and how many times it was used. Only files the run wrote are read: `selections.parquet` and `pool/`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lead_ray.runtime.run_files import read_run_files

FORMATS = ("jsonl", "parquet")


def selected_rows(run_dir: Path) -> pa.Table:
    """The run's selected samples (one row each, in first-selected order) joined with their pool rows."""
    sel = read_run_files(run_dir).selections.to_pandas().sort_values(["round", "id"], kind="stable")
    by_id = sel.groupby("id", sort=False)
    stats = by_id.agg(arm=("arm", "last"), group=("group", "last"), uses=("round", "size"),
                      idu_before=("idu_before", "first"), idu_after=("idu_after", "last"), loss=("loss", "last"))
    stats["rounds"] = by_id["round"].agg(list)
    pool = pq.read_table(run_dir / "pool" / "pool.parquet", columns=["id", "source", "messages", "path", "line"])
    pool = pool.filter(pc.is_in(pool.column("id"), value_set=pa.array(stats.index.to_numpy()))).to_pandas()
    out = stats.reset_index().merge(pool, on="id", how="left", validate="one_to_one")
    if out["messages"].isna().any():
        raise FileNotFoundError(f"{run_dir / 'pool' / 'pool.parquet'} lacks some selected ids: not this run's pool")
    out["messages"] = [json.loads(m) for m in out["messages"]]
    columns = ["messages", "id", "source", "path", "line", "rounds", "uses", "arm", "group", "idu_before",
               "idu_after", "loss"]
    return pa.Table.from_pandas(out[columns], preserve_index=False)


def export_selected(run_dir: Path | str, fmt: str = "jsonl", out: Path | str | None = None) -> Path:
    """Write the selected rows to `out` (default `<run>/selected.<fmt>`); returns the path."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    run_dir = Path(run_dir)
    table = selected_rows(run_dir)
    path = Path(out) if out else run_dir / f"selected.{fmt}"
    if fmt == "parquet":
        pq.write_table(table, path)
    else:
        with open(path, "w", encoding="utf-8") as f:
            for row in table.to_pylist():
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def main_export(run_dir: str, fmt: str, out: str | None) -> int:
    """`lead-ray export`: one line with the path written, or one error line."""
    try:
        path = export_selected(run_dir, fmt, out)
    except (OSError, ValueError) as e:  # a missing run, a bad format, an --out that is a folder or not writable
        print(f"lead-ray: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(f"{path} ({pq.read_metadata(path).num_rows if fmt == 'parquet' else sum(1 for _ in open(path))} rows)")
    return 0
