"""Ray Data ingest: raw files → normalised, tokenized pool with dense int64 ids, plus a quarantine.

Files are cut into blocks (JSONL after a newline, Parquet by row groups), read and tokenized in parallel on an actor
pool, and streamed back in input order (Ray Data's `preserve_order`: a reorder buffer, not a sort), so a row's id
is its rank among kept rows in (file, line) order whatever the block size or the number of actors.
rows read = rows kept + rows quarantined (+ rows past `max_samples`, counted), always.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lead_ray.config import DataArgs, LeadRayError
from lead_ray.config.fields import check_choice
from lead_ray.data.formats import BadRow, normalize
from lead_ray.data.store import StoreWriter
from lead_ray.data.tokenize import tokenize_messages
from lead_ray.models.load import load_tokenizer
from lead_ray.runtime.console import Progress
from lead_ray.runtime.ray_init import reads_on_driver_node

EXTENSIONS = (".jsonl", ".json", ".parquet")
RAW_PREVIEW = 500
BLOCK_BYTES = 32 << 20  # input bytes per read-and-tokenize block


class DataError(LeadRayError, ValueError):
    """Missing or unreadable input files; the message names the path."""


@dataclass
class IngestSummary:
    read: int
    kept: int
    quarantined: int
    capped: int
    eval_rows: int
    pool_dir: str
    duplicates: int = 0  # exact duplicates of an earlier row (quarantined with dedup: exact, kept with none)
    dedup: str = "exact"
    empty_files: list[str] = field(default_factory=list)

    def line(self) -> str:
        capped = f" + {self.capped} past max_samples" if self.capped else ""
        dups = (f"; {self.duplicates} exact duplicates " + ("quarantined" if self.dedup == "exact" else "kept")
                if self.duplicates else "")
        empty = f"; empty files: {', '.join(Path(f).name for f in self.empty_files)}" if self.empty_files else ""
        return (f"rows read {self.read} = kept {self.kept} + quarantined {self.quarantined}{capped}"
                f"  (eval split {self.eval_rows}{dups}{empty})")


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


def _record(path: str, line: int, raw: str, error: str = "") -> dict[str, Any]:
    return {"path": path, "line": line, "raw": raw, "error": error}


def _split_jsonl(path: str, data: bytes, first_line: int = 1) -> list[dict[str, Any]]:
    """One record per non-blank line of JSONL bytes that start at line `first_line` of the file."""
    out = []
    for i, chunk in enumerate(data.split(b"\n")):
        if i == 0 and first_line == 1 and chunk.startswith(b"\xef\xbb\xbf"):
            chunk = chunk[3:]  # a UTF-8 byte-order mark
        if not chunk.strip():
            continue
        try:
            out.append(_record(path, first_line + i, chunk.decode("utf-8")))
        except UnicodeDecodeError:
            out.append(_record(path, first_line + i, chunk.decode("utf-8", "replace"), "invalid UTF-8"))
    return out


def _split_file(path: str, data: bytes) -> list[dict[str, Any]]:
    """One raw record per JSONL line / JSON array item / Parquet row; unreadable parts become error records.
    `line` counts from 1, as editors do (the JSONL line, the array item, the Parquet row); 0 is the whole file."""
    rec = partial(_record, path)
    if path.endswith(".jsonl"):
        return _split_jsonl(path, data)
    if path.endswith(".json"):
        try:
            items = json.loads(data.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:  # bad bytes or JSON somewhere in the file
            parts = _json_array_items(data)
            if parts is None:  # not an array: the whole file is one bad record
                what = "valid UTF-8" if isinstance(e, UnicodeDecodeError) else f"valid JSON: {_short(e)}"
                return [rec(0, data[:RAW_PREVIEW].decode("utf-8", "replace"), f"file is not {what}")]
            return [rec(i + 1, raw, error) for i, raw, error in parts]
        if isinstance(items, dict):
            items, error = _unwrap_rows(items)
            if error:
                return [rec(0, data[:RAW_PREVIEW].decode("utf-8", "replace"), error)]
        elif not isinstance(items, list):  # a lone scalar: one record (quarantined by the row check)
            items = [items]
        # ASCII escapes keep every record storable in Arrow, even text with unpaired surrogates
        return [rec(i + 1, json.dumps(item)) for i, item in enumerate(items)]
    try:
        rows = pq.read_table(io.BytesIO(data)).to_pylist()
    except Exception as e:  # a corrupt Parquet file is one quarantined record, not a crash
        return [rec(0, "", f"unreadable Parquet file: {type(e).__name__}: {_short(e)}")]
    return [rec(i + 1, json.dumps(row, default=str)) for i, row in enumerate(rows)]


def plan_blocks(files: list[str], block_bytes: int = BLOCK_BYTES) -> list[dict[str, Any]]:
    """Cut the input into blocks of about `block_bytes`, in input order, each with the file line it starts at, so
    blocks are read and tokenized in parallel and every row keeps its (file, line) and so its id. JSONL is cut after
    a newline (counted here: a pass over the bytes, at memory speed); Parquet by row groups (from its footer); a
    JSON file is one block (its array must be parsed whole)."""
    blocks = []
    for path in files:
        size = Path(path).stat().st_size
        if path.endswith(".jsonl") and size > block_bytes:
            blocks += _jsonl_blocks(path, size, block_bytes)
        elif path.endswith(".parquet"):
            blocks += parquet_blocks(path, block_bytes)
        else:
            blocks.append({"path": path, "kind": "file", "start": 0, "end": size, "first_line": 1})
    return blocks


def _jsonl_blocks(path: str, size: int, block_bytes: int) -> list[dict[str, Any]]:
    """Blocks that end just after a newline (a line longer than a block makes a longer block)."""
    blocks, start, line = [], 0, 1
    with open(path, "rb") as f:
        while start < size:
            end = start + block_bytes
            f.seek(end)
            while end < size and not (piece := f.read(1 << 20)).count(b"\n"):
                end += len(piece)
            if end < size:
                end += piece.index(b"\n") + 1
            blocks.append({"path": path, "kind": "bytes", "start": start, "end": min(end, size), "first_line": line})
            f.seek(start)
            for _ in range(start, min(end, size), 8 << 20):
                line += f.read(min(8 << 20, min(end, size) - f.tell())).count(b"\n")
            start = min(end, size)
    return blocks


def parquet_blocks(path: str, block_bytes: int) -> list[dict[str, Any]]:
    """Runs of whole row groups of about `block_bytes` each (from the footer), each with its first row's number."""
    try:
        meta = pq.ParquetFile(path).metadata
    except Exception:  # unreadable: one block, quarantined whole when it is read
        return [{"path": path, "kind": "file", "start": 0, "end": 0, "first_line": 1}]
    blocks, first, rows, size = [], 0, 0, 0
    for g in range(meta.num_row_groups):
        size += meta.row_group(g).total_byte_size
        if size >= block_bytes or g == meta.num_row_groups - 1:
            blocks.append({"path": path, "kind": "row_groups", "start": first, "end": g + 1, "first_line": rows + 1})
            rows += sum(meta.row_group(i).num_rows for i in range(first, g + 1))
            first, size = g + 1, 0
    return blocks or [{"path": path, "kind": "file", "start": 0, "end": 0, "first_line": 1}]


def read_block(block: dict[str, Any]) -> list[dict[str, Any]]:
    """The raw records of one block (see `plan_blocks`), lines numbered as in the whole file."""
    path, kind, start, end = block["path"], block["kind"], int(block["start"]), int(block["end"])
    if kind == "bytes":
        with open(path, "rb") as f:
            f.seek(start)
            return _split_jsonl(path, f.read(end - start), int(block["first_line"]))
    if kind == "row_groups":
        first = int(block["first_line"])
        try:
            rows = pq.ParquetFile(path).read_row_groups(range(start, end)).to_pylist()
        except Exception as e:  # corrupt pages behind a readable footer: the block is one quarantined record
            return [_record(path, first, "", f"unreadable Parquet row groups {start}..{end - 1} (rows from {first}): "
                                             f"{type(e).__name__}: {_short(e)}")]
        return [_record(path, first + i, json.dumps(row, default=str)) for i, row in enumerate(rows)]
    return _split_file(path, Path(path).read_bytes())


ROW_KEYS = ("instruction", "output", "conversations", "messages")  # any of these: the object is one row
WRAPPER_KEYS = ("data", "rows", "examples")


def _unwrap_rows(obj: dict[str, Any]) -> tuple[list[Any], str]:
    """(items, error) for a top-level JSON object: one row; or the rows under its one `data`/`rows`/`examples`
    list; or an error with a hint when it holds a list under another key."""
    lists = [k for k, v in obj.items() if isinstance(v, list)]
    wrapped = [k for k in lists if k in WRAPPER_KEYS]
    if len(wrapped) == 1 and not any(k in obj for k in ROW_KEYS):
        return obj[wrapped[0]], ""
    if lists and not any(k in obj for k in ROW_KEYS):
        return [], (f"a JSON object that is not a row; its lists are under {', '.join(map(repr, lists[:5]))}: "
                    f"put the rows in a top-level array, or under exactly one of {', '.join(WRAPPER_KEYS)}")
    return [obj], ""


def _json_array_items(data: bytes) -> list[tuple[int, str, str]] | None:
    """(index, raw, error) per item of a top-level JSON array that did not parse as a whole: items are cut at the
    array's top-level commas (strings and nesting tracked), so a bad item, bad bytes or a truncated tail is
    quarantined on its own, with its index, and the good items are kept. None if the file is not an array."""
    start = len(data) - len(data.lstrip(b"\xef\xbb\xbf \t\r\n"))
    if data[start : start + 1] != b"[":
        return None
    chunks, depth, in_string, escaped, begin, end = [], 0, False, False, start + 1, None
    for j in range(start + 1, len(data)):
        c = data[j]
        if in_string:
            if escaped:
                escaped = False
            elif c == 0x5C:  # backslash
                escaped = True
            elif c == 0x22:
                in_string = False
        elif c == 0x22:
            in_string = True
        elif c in (0x5B, 0x7B):
            depth += 1
        elif c in (0x5D, 0x7D):
            if depth == 0:  # the array's closing bracket
                chunks.append(data[begin:j])
                end = j + 1
                break
            depth -= 1
        elif c == 0x2C and depth == 0:
            chunks.append(data[begin:j])
            begin = j + 1
    else:
        chunks.append(data[begin:])
    out: list[tuple[int, str, str]] = []
    for i, chunk in enumerate(chunks):
        text = chunk.strip()
        if not text:
            continue  # "[]" or a trailing comma
        raw = text[:RAW_PREVIEW].decode("utf-8", "replace")
        if end is None and i == len(chunks) - 1:
            out.append((i, raw, f"item {i + 1} is cut off: the file ends before the array closes"))
            continue
        try:
            item = json.loads(text.decode("utf-8"))
        except UnicodeDecodeError:
            out.append((i, raw, f"item {i + 1} is not valid UTF-8"))
        except (ValueError, RecursionError) as e:
            out.append((i, raw, f"item {i + 1} is not valid JSON: {_short(e)}"))
        else:
            out.append((i, json.dumps(item), ""))
    if end is not None and data[end:].strip():
        out.append((len(chunks), data[end : end + RAW_PREVIEW].decode("utf-8", "replace"), "text after the end of the array"))
    return out


def _short(e: BaseException) -> str:
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__


class Tokenize:
    """Ray Data callable: raw record → kept row (tokens, metadata) or quarantined row (reason)."""

    def __init__(self, tokenizer_path: str, max_length: int, trust_remote_code: bool = False):

        self.tokenizer = load_tokenizer(tokenizer_path, trust_remote_code)
        self.max_length = max_length

    def row(self, path: str, line: int, raw: str, error: str) -> dict[str, Any]:

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




class KeySet:
    """Exact set of 63-bit row hashes as sorted NumPy runs (8 bytes a row, where a Python set takes ~70), merged
    like an LSM tree so adding N keys costs O(N log N) in all."""

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []

    def __contains__(self, key: int) -> bool:
        return bool(self._seen(np.asarray([key], dtype=np.int64))[0])

    def _seen(self, keys: np.ndarray) -> np.ndarray:
        seen = np.zeros(len(keys), dtype=bool)
        for run in self.runs:
            at = np.minimum(np.searchsorted(run, keys), len(run) - 1)
            seen |= run[at] == keys
        return seen

    def add(self, keys: np.ndarray) -> np.ndarray:
        """Add `keys` in order; returns which were already in the set or earlier in `keys`."""
        keys = np.asarray(keys, dtype=np.int64)
        unique, first = np.unique(keys, return_index=True)
        repeat = np.ones(len(keys), dtype=bool)
        repeat[first] = self._seen(unique)
        new = unique[~repeat[first]]
        if len(new):
            self.runs.append(new)
            while len(self.runs) > 1 and len(self.runs[-2]) <= 2 * len(self.runs[-1]):
                last = self.runs.pop()
                self.runs[-1] = np.sort(np.concatenate([self.runs[-1], last]), kind="stable")
        return repeat


def ingest(files: list[str], tokenizer_path: str, out_dir: Path, *, max_length: int, eval_fraction: float,
           max_samples: int | None = None, concurrency: int = 1, trust_remote_code: bool = False,
           dedup: str = "exact", block_bytes: int = BLOCK_BYTES) -> IngestSummary:
    """Read → normalise → tokenize in Ray Data, `block_bytes` of input per block, on `concurrency` tokenizer
    actors; the blocks come back in input order (streamed, never sorted), and one pass assigns dense ids in
    (file, line) order and writes `pool.parquet`, `pool.arrow` (memory-mapped token store) and
    `quarantine.parquet`, with Arrow column operations only (no per-token Python). With `dedup: exact`, a row
    whose messages equal an earlier row's is quarantined (reason `duplicate`); with `none` it is kept and counted."""
    import ray

    check_choice(DataArgs, "dedup", dedup)
    empty_files = [f for f in files if Path(f).stat().st_size == 0]

    out_dir.mkdir(parents=True, exist_ok=True)
    blocks = plan_blocks(files, block_bytes)
    # the input files are on the driver's disk: their reads stay on its node
    ds = ray.data.from_items(blocks, override_num_blocks=len(blocks)).flat_map(read_block, **reads_on_driver_node(len(blocks)))
    ds = ds.map_batches(Tokenize, fn_constructor_args=(tokenizer_path, max_length, trust_remote_code),
                        batch_size=256, compute=ray.data.ActorPoolStrategy(size=concurrency))
    ds.context.execution_options.preserve_order = True  # rows arrive in (file, line) order, streamed: no sort

    store = StoreWriter(out_dir / "pool.arrow")
    pool_writer = quarantine_writer = None
    read = kept = quarantined = capped = eval_rows = duplicates = 0
    seen = KeySet()  # content hashes of the rows kept so far

    def quarantine(q: pa.Table) -> None:
        nonlocal quarantine_writer, quarantined
        q = q.select(["path", "line", "reason", "raw"])
        quarantine_writer = quarantine_writer or pq.ParquetWriter(out_dir / "quarantine.parquet", q.schema)
        quarantine_writer.write_table(q.cast(quarantine_writer.schema))
        quarantined += q.num_rows

    threshold = int(eval_fraction * 2**63)
    progress = Progress("ingest", None)  # rows read; the total is known only at the end
    for batch in ds.iter_batches(batch_size=1024, batch_format="pyarrow"):
        read += batch.num_rows
        progress.update(batch.num_rows)
        reason = batch.column("reason").to_numpy(zero_copy_only=False)
        bad = reason != ""
        if bad.any():
            quarantine(batch.filter(pa.array(bad)))
        good = batch.filter(pa.array(~bad))
        repeat = seen.add(good.column("key").to_numpy())
        duplicates += int(repeat.sum())
        if dedup == "exact" and repeat.any():
            dup = good.filter(pa.array(repeat))
            quarantine(dup.set_column(dup.schema.get_field_index("reason"), "reason",
                                      pa.array(["duplicate: the same messages as an earlier row"] * dup.num_rows)))
            good = good.filter(pa.array(~repeat))
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
        store.write(ids, good.column("input_ids"), good.column("assistant_mask"))
        table = pa.table({"id": ids, "source": good.column("source"), "split": split,
                          "messages": good.column("messages"),
                          "n_prompt_tokens": good.column("n_prompt_tokens").cast(pa.int32()),
                          "n_response_tokens": good.column("n_response_tokens").cast(pa.int32()),
                          "path": good.column("path"), "line": good.column("line")})
        pool_writer = pool_writer or pq.ParquetWriter(out_dir / "pool.parquet", table.schema)
        pool_writer.write_table(table)
        kept += good.num_rows
    progress.close()
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
    summary = IngestSummary(read, kept, quarantined, capped, eval_rows, str(out_dir), duplicates, dedup, empty_files)
    (out_dir / "ingest.json").write_text(json.dumps(asdict(summary), indent=2))
    return summary
