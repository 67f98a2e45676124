"""`lead-ray export`: a finished run's selected rows as a dataset, checked against selections.parquet by hand and
round-tripped through lead-ray's own ingest (the rows come back unchanged, none quarantined)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lead_ray.export import export_selected
from tests.conftest import REPO

pytestmark = pytest.mark.slow  # it needs the session's finished tiny run


def test_export_matches_the_selections_and_round_trips_through_ingest(ray_local, tiny_job, tiny_model_path: str,
                                                                     tmp_path: Path) -> None:
    from lead_ray.data.pool import ingest

    run = tiny_job[0]
    sel = pq.read_table(run / "selections.parquet").to_pandas()
    pool = pq.read_table(run / "pool" / "pool.parquet").to_pandas().set_index("id")
    paths, exported = [], []
    for fmt in ("jsonl", "parquet"):
        path = export_selected(run, fmt, tmp_path / f"selected.{fmt}")
        rows = (pq.read_table(path).to_pylist() if fmt == "parquet"
                else [json.loads(line) for line in path.read_text().splitlines()])
        assert [r["id"] for r in rows] == list(dict.fromkeys(sel.sort_values(["round", "id"])["id"]))  # first use
        assert sum(r["uses"] for r in rows) == len(sel)  # every (round, id) counted once
        for r in rows:
            mine = sel[sel["id"] == r["id"]].sort_values("round")
            assert r["rounds"] == mine["round"].tolist() and r["uses"] == len(mine)
            assert r["idu_before"] == mine["idu_before"].iloc[0] and r["idu_after"] == mine["idu_after"].iloc[-1]
            assert r["arm"] == mine["arm"].iloc[-1] and r["group"] == mine["group"].iloc[-1]
            assert r["messages"] == json.loads(pool.loc[r["id"], "messages"])
            assert (r["source"], r["path"], r["line"]) == tuple(pool.loc[r["id"], ["source", "path", "line"]])
        paths.append(str(path))
        exported += [r["messages"] for r in rows]
    # both files through lead-ray's own ingest (dedup off: the two files hold the same rows)
    summary = ingest(paths, tiny_model_path, tmp_path / "pool", max_length=10_000, eval_fraction=0.0, dedup="none")
    assert summary.read == summary.kept == len(exported) and summary.quarantined == 0
    back = pq.read_table(tmp_path / "pool" / "pool.parquet").to_pandas().sort_values(["path", "line"])
    assert sorted(map(json.dumps, (json.loads(m) for m in back["messages"]))) == sorted(map(json.dumps, exported))


def test_export_cli_names_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "lead_ray.cli", "export", str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.startswith(f"lead-ray: error: {tmp_path} is not a finished run dir")


def test_export_cli_says_when_out_cannot_be_written(tiny_job, tmp_path: Path) -> None:
    """--out a folder, or in a folder that does not exist: one line, exit 2 (was a traceback)."""
    run = tiny_job[0]
    for out, says in ((tmp_path, "Is a directory"), (tmp_path / "missing" / "x.jsonl", "No such file or directory")):
        p = subprocess.run([sys.executable, "-m", "lead_ray.cli", "export", str(run), "--out", str(out)], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and p.stderr.startswith("lead-ray: error: ") and says in p.stderr, p.stderr
        assert p.stderr.count("\n") == 1
