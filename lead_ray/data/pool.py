"""Ray Data ingest: raw files → normalised, tokenized pool with dense int64 ids, plus a quarantine.

rows read = rows kept + rows quarantined (+ rows past `max_samples`, counted), always.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lead_ray.data.formats import BadRow, normalize
from lead_ray.data.store import StoreWriter

EXTENSIONS = (".jsonl", ".json", ".parquet")
RAW_PREVIEW = 500


class DataError(ValueError):
    """Missing or unreadable input files; the message names the path."""


@dataclass
class IngestSummary:
    read: int
    kept: int
    quarantined: int
    capped: int
    eval_rows: int
    pool_dir: str

    def line(self) -> str:
        capped = f" + {self.capped} past max_samples" if self.capped else ""
        return (f"rows read {self.read} = kept {self.kept} + quarantined {self.quarantined}{capped}"
                f"  (eval split {self.eval_rows})")


def discover_files(entries: list[str]) -> list[str]:
    """Expand folders to their .json/.jsonl/.parquet files, sorted; fail clearly on anything missing."""
    files: list[str] = []
    for entry in entries:
        p = Path(entry).expanduser()
        if p.is_dir():
            found = sorted(str(f.resolve()) for f in p.iterdir() if f.suffix in EXTENSIONS and f.is_file())
            if not found:
                raise DataError(f"data folder {p} has no {', '.join(EXTENSIONS)} files")
            files.extend(found)
        elif p.is_file():
            if p.suffix not in EXTENSIONS:
                raise DataError(f"data file {p} has unsupported extension {p.suffix!r}; use {', '.join(EXTENSIONS)}")
            files.append(str(p.resolve()))
        else:
            raise DataError(f"data file or folder not found: {p}")
    return files


def _split_file(path: str, data: bytes) -> list[dict[str, Any]]:
    """One raw record per JSONL line / JSON array item / Parquet row; unreadable parts become error records."""
    def rec(line: int, raw: str, error: str = "") -> dict[str, Any]:
        return {"path": path, "line": line, "raw": raw, "error": error}

    if path.endswith(".jsonl"):
        out = []
        for i, chunk in enumerate(data.split(b"\n")):
            if i == 0 and chunk.startswith(b"\xef\xbb\xbf"):
                chunk = chunk[3:]  # a UTF-8 byte-order mark
            if not chunk.strip():
                continue
            try:
                out.append(rec(i, chunk.decode("utf-8")))
            except UnicodeDecodeError:
                out.append(rec(i, chunk.decode("utf-8", "replace"), "invalid UTF-8"))
        return out
    if path.endswith(".json"):
        try:
            items = json.loads(data.decode("utf-8-sig"))
        except UnicodeDecodeError:
            return [rec(0, data[:RAW_PREVIEW].decode("utf-8", "replace"), "file is not valid UTF-8")]
        except (ValueError, RecursionError) as e:  # bad JSON, absurd nesting, over-long integers
            return [rec(0, data[:RAW_PREVIEW].decode("utf-8", "replace"), f"file is not valid JSON: {_short(e)}")]
        if not isinstance(items, list):
            items = [items]
        # ASCII escapes keep every record storable in Arrow, even text with unpaired surrogates
        return [rec(i, json.dumps(item)) for i, item in enumerate(items)]
    try:
        rows = pq.read_table(io.BytesIO(data)).to_pylist()
    except Exception as e:  # a corrupt Parquet file is one quarantined record, not a crash
        return [rec(0, "", f"unreadable Parquet file: {type(e).__name__}: {_short(e)}")]
    return [rec(i, json.dumps(row, default=str)) for i, row in enumerate(rows)]


def _short(e: BaseException) -> str:
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__


class Tokenize:
    """Ray Data callable: raw record → kept row (tokens, metadata) or quarantined row (reason)."""

    def __init__(self, tokenizer_path: str, max_length: int, trust_remote_code: bool = False):
        from lead_ray.train.model import load_tokenizer

        self.tokenizer = load_tokenizer(tokenizer_path, trust_remote_code)
        self.max_length = max_length

    def row(self, path: str, line: int, raw: str, error: str) -> dict[str, Any]:
        from lead_ray.data.tokenize import tokenize_messages

        out = {"path": path, "line": line, "reason": error, "raw": raw[:RAW_PREVIEW], "source": "",
               "messages": "", "input_ids": [], "assistant_mask": [], "n_prompt_tokens": 0,
               "n_response_tokens": 0, "key": 0, "split": ""}
        if error:
            return out
        try:
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as e:
                raise BadRow(f"invalid JSON: {e.msg}") from None
            except (ValueError, RecursionError) as e:  # absurd nesting, over-long integers
                raise BadRow(f"invalid JSON: {_short(e)}") from None
            messages = normalize(record)
            for m in messages:
                try:
                    m["content"].encode("utf-8")
                except UnicodeEncodeError:
                    raise BadRow(f"{m['role']} text is not valid Unicode (unpaired surrogate)") from None
            ids, mask = tokenize_messages(self.tokenizer, messages, self.max_length)
        except BadRow as e:
            out["reason"] = str(e)
            return out
        except Exception as e:  # never let one row take the whole ingest down: quarantine it, with the cause
            out["reason"] = f"unexpected {type(e).__name__}: {_short(e)}"
            return out
        source = record.get("source")
        if record.get("split") in ("train", "eval"):  # a row may say which split it is in; else the id hash says
            out["split"] = record["split"]
        text = json.dumps(messages, ensure_ascii=False)
        out.update(source=source if isinstance(source, str) and source else Path(path).stem, messages=text,
                   input_ids=ids.tolist(), assistant_mask=mask.tolist(), n_response_tokens=int(mask.sum()),
                   n_prompt_tokens=int(len(mask) - mask.sum()),
                   key=int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1)
        return out

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        rows = [self.row(str(p), int(i), str(r), str(e))
                for p, i, r, e in zip(batch["path"], batch["line"], batch["raw"], batch["error"])]
        return {k: [r[k] for r in rows] for k in rows[0]} if rows else {}




def ingest(files: list[str], tokenizer_path: str, out_dir: Path, *, max_length: int, eval_fraction: float,
           max_samples: int | None = None, concurrency: int = 1, trust_remote_code: bool = False) -> IngestSummary:
    """Read → normalise → tokenize in Ray Data; then one ordered streaming pass assigns dense ids and writes
    `pool.parquet`, `pool.arrow` (memory-mapped token store) and `quarantine.parquet`."""
    import ray

    out_dir.mkdir(parents=True, exist_ok=True)
    ds = ray.data.read_binary_files(files, include_paths=True, override_num_blocks=len(files))
    ds = ds.flat_map(lambda r: _split_file(r["path"], r["bytes"]))
    ds = ds.map_batches(Tokenize, fn_constructor_args=(tokenizer_path, max_length, trust_remote_code),
                        batch_size=256, concurrency=concurrency)
    file_index = {f: i for i, f in enumerate(files)}
    ds = ds.map_batches(lambda b: {**b, "file_index": np.array([file_index[p] for p in b["path"]], np.int64)},
                        batch_format="numpy")
    ds = ds.sort(["file_index", "line"])

    store = StoreWriter(out_dir / "pool.arrow")
    pool_writer = quarantine_writer = None
    read = kept = quarantined = capped = eval_rows = 0
    threshold = int(eval_fraction * 2**63)
    t0 = last = time.time()
    for batch in ds.iter_batches(batch_size=1024, batch_format="pyarrow"):
        read += batch.num_rows
        if time.time() - last > 15:
            last = time.time()
            print(f"[lead-ray] ingest: {read} rows written ({read / (last - t0):.0f} rows/s)", flush=True)
        reason = batch.column("reason").to_numpy(zero_copy_only=False)
        bad = reason != ""
        if bad.any():
            q = batch.filter(pa.array(bad)).select(["path", "line", "reason", "raw"])
            quarantine_writer = quarantine_writer or pq.ParquetWriter(out_dir / "quarantine.parquet", q.schema)
            quarantine_writer.write_table(q)
            quarantined += int(bad.sum())
        good = batch.filter(pa.array(~bad))
        if max_samples is not None and kept + good.num_rows > max_samples:
            capped += kept + good.num_rows - max_samples
            good = good.slice(0, max_samples - kept)
        if good.num_rows == 0:
            continue
        ids = np.arange(kept, kept + good.num_rows, dtype=np.int64)
        keys = good.column("key").to_numpy()
        given = good.column("split").to_numpy(zero_copy_only=False)
        split = np.where(given != "", given, np.where(keys < threshold, "eval", "train"))
        eval_rows += int((split == "eval").sum())
        store.write(ids, good.column("input_ids").to_pylist(), good.column("assistant_mask").to_pylist())
        table = pa.table({"id": ids, "source": good.column("source"), "split": split,
                          "messages": good.column("messages"),
                          "n_prompt_tokens": good.column("n_prompt_tokens").cast(pa.int32()),
                          "n_response_tokens": good.column("n_response_tokens").cast(pa.int32()),
                          "path": good.column("path"), "line": good.column("line")})
        pool_writer = pool_writer or pq.ParquetWriter(out_dir / "pool.parquet", table.schema)
        pool_writer.write_table(table)
        kept += good.num_rows
    store.close()
    for w in (pool_writer, quarantine_writer):
        if w is not None:
            w.close()
    if quarantine_writer is None:
        pq.write_table(pa.table({"path": pa.array([], pa.string()), "line": pa.array([], pa.int64()),
                                 "reason": pa.array([], pa.string()), "raw": pa.array([], pa.string())}),
                       out_dir / "quarantine.parquet")
    if kept == 0:
        raise DataError(f"no usable rows in {len(files)} file(s): all {read} were quarantined; "
                        f"see {out_dir / 'quarantine.parquet'}")
    summary = IngestSummary(read, kept, quarantined, capped, eval_rows, str(out_dir))
    (out_dir / "ingest.json").write_text(json.dumps(asdict(summary), indent=2))
    return summary
