"""Ray Data ingest on real files of every format, including broken ones: nothing is lost."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lead_ray.data.pool import DataError, discover_files, ingest
from lead_ray.data.store import RowStore


def _write_inputs(d: Path) -> tuple[list[str], int, int]:
    """Files with a known number of good and bad records; returns (files, good, bad)."""
    good = bad = 0
    lines = [json.dumps({"instruction": f"Add {i} and {i}.", "output": f"{2 * i}", "source": "alpaca"})
             for i in range(10)]
    lines.append('{"instruction": "truncated')  # bad: invalid JSON
    lines.append(json.dumps({"messages": [{"role": "user", "content": "hi"}]}))  # bad: no assistant
    lines.append(json.dumps({"foo": 1}))  # bad: no format
    good, bad = good + 10, bad + 3
    raw = ("\n".join(lines) + "\n").encode() + b'{"instruction": "caf\xe9", "output": "x"}\n'  # bad: not UTF-8
    bad += 1
    (d / "a.jsonl").write_bytes(raw)
    share = [{"conversations": [{"from": "human", "value": f"Q{i}?"}, {"from": "gpt", "value": f"A{i}."}]}
             for i in range(6)]
    share.append({"conversations": [{"from": "wizard", "value": "x"}, {"from": "gpt", "value": "y"}]})  # bad
    good, bad = good + 6, bad + 1
    (d / "b.json").write_text(json.dumps(share))
    (d / "c.json").write_text("[{not json")  # bad: one item, cut off
    bad += 1
    (d / "f.json").write_text("{not json")  # bad: not an array, so the whole file is one quarantined record
    bad += 1
    msgs = [[{"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": w}] for w in "xyz"]
    pq.write_table(pa.table({"messages": msgs, "source": ["pq"] * 3}), d / "d.parquet")
    good += 3
    pq.write_table(pa.table({"text": ["wrong schema 1", "wrong schema 2"]}), d / "e.parquet")  # 2 bad rows
    bad += 2
    return discover_files([str(d)]), good, bad


def test_ingest_counts_quarantine_and_store(ray_local, tiny_model_path: str, tmp_path: Path) -> None:
    files, good, bad = _write_inputs(tmp_path)
    out = tmp_path / "pool"
    s = ingest(files, tiny_model_path, out, max_length=128, eval_fraction=0.2)
    assert (s.read, s.kept, s.quarantined) == (good + bad, good, bad)
    assert s.read == s.kept + s.quarantined + s.capped

    q = pq.read_table(out / "quarantine.parquet").to_pylist()
    assert len(q) == bad and all(r["reason"] for r in q)
    reasons = " | ".join(r["reason"] for r in q)
    for expected in ("invalid JSON", "no assistant turn", "fits no known format", "invalid UTF-8",
                     "unknown role", "file is not valid JSON", "item 1 is cut off"):
        assert expected in reasons
    # `line` counts from 1, as an editor does: the bad row is found in its file at the line reported (0: the file)
    at = {(Path(r["path"]).name, r["line"]) for r in q}
    assert at == {("a.jsonl", 11), ("a.jsonl", 12), ("a.jsonl", 13), ("a.jsonl", 14), ("b.json", 7),
                  ("c.json", 1), ("f.json", 0), ("e.parquet", 1), ("e.parquet", 2)}
    text = (tmp_path / "a.jsonl").read_bytes().split(b"\n")
    for r in q:
        name, line = Path(r["path"]).name, r["line"]
        if name == "a.jsonl":
            assert r["raw"] == text[line - 1].decode("utf-8", "replace")
        elif name == "b.json":
            assert json.loads(r["raw"]) == json.loads((tmp_path / "b.json").read_text())[line - 1]
        elif name == "e.parquet":
            assert json.loads(r["raw"]) == pq.read_table(tmp_path / "e.parquet").to_pylist()[line - 1]

    pool = pq.read_table(out / "pool.parquet").to_pylist()
    assert [r["id"] for r in pool] == list(range(good))  # dense ids in file/line order
    assert {r["source"] for r in pool} == {"alpaca", "b", "pq"}  # file stem when no source field
    assert 0 < sum(r["split"] == "eval" for r in pool) < good

    from lead_ray.models.load import load_tokenizer

    tok = load_tokenizer(tiny_model_path)
    store = RowStore(out / "pool.arrow")
    assert len(store) == good
    for r in pool:
        ids, mask = store.get(r["id"])
        answer = json.loads(r["messages"])[-1]["content"]
        assert tok.decode(ids[mask.astype(bool)]) == answer + "<|im_end|>\n"
        assert int(mask.sum()) == r["n_response_tokens"] and len(ids) == r["n_response_tokens"] + r["n_prompt_tokens"]


def test_ingest_is_deterministic_and_caps(ray_local, tiny_model_path: str, tmp_path: Path) -> None:
    files, good, bad = _write_inputs(tmp_path)
    a = ingest(files, tiny_model_path, tmp_path / "p1", max_length=128, eval_fraction=0.2)
    b = ingest(files, tiny_model_path, tmp_path / "p2", max_length=128, eval_fraction=0.2, max_samples=5)
    assert b.kept == 5 and b.capped == good - 5 and b.read == b.kept + b.quarantined + b.capped
    t1, t2 = pq.read_table(tmp_path / "p1" / "pool.parquet"), pq.read_table(tmp_path / "p2" / "pool.parquet")
    assert t1.slice(0, 5).equals(t2)  # same ids, same rows, same split: stable across runs
    too_short = ingest(files, tiny_model_path, tmp_path / "p3", max_length=16, eval_fraction=0.0)
    q = pq.read_table(tmp_path / "p3" / "quarantine.parquet").column("reason").to_pylist()
    assert too_short.read == a.read and sum("too many tokens" in r for r in q) == a.kept - too_short.kept > 0


def test_missing_and_unsupported_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        discover_files([str(tmp_path / "nope.jsonl")])
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported extension"):
        discover_files([str(tmp_path / "x.csv")])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="has no"):
        discover_files([str(empty)])


def test_all_bad_rows_is_a_clear_error(ray_local, tiny_model_path: str, tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"foo": 1}\n{"bar": 2}\n')
    with pytest.raises(DataError, match="all 2 were quarantined"):
        ingest(discover_files([str(tmp_path)]), tiny_model_path, tmp_path / "p", max_length=64, eval_fraction=0.0)
    assert pq.read_table(tmp_path / "p" / "quarantine.parquet").num_rows == 2


def test_rows_may_name_their_split(ray_local, tiny_model_path: str, tmp_path: Path) -> None:
    """A row's own `split` wins over the id hash (a separate held-out set); other rows follow eval_fraction."""
    rows = [{"instruction": f"Q{i}?", "output": f"A{i}.", "split": s}
            for i, s in enumerate(["eval", "eval", "train", "bogus", None, "eval"])]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    files = discover_files([str(tmp_path / "in")])
    s = ingest(files, tiny_model_path, tmp_path / "p0", max_length=128, eval_fraction=0.0)
    split = pq.read_table(tmp_path / "p0" / "pool.parquet").column("split").to_pylist()
    assert s.eval_rows == 3 and split == ["eval", "eval", "train", "train", "train", "eval"]  # no hash eval rows at fraction 0
    ingest(files, tiny_model_path, tmp_path / "p1", max_length=128, eval_fraction=0.999999)
    split = pq.read_table(tmp_path / "p1" / "pool.parquet").column("split").to_pylist()
    assert split == ["eval", "eval", "train", "eval", "eval", "eval"]  # an explicit train row stays train
