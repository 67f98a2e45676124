"""Resumable stages: each output carries the hash of what it was made from, so a rerun skips what is current.

An output is written under a temporary name and moved into place when complete, and only then is its marker
written: a stage interrupted halfway leaves no marker and is redone; a stage whose inputs changed is redone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lead_ray.config import OPERATIONAL


def stage_key(*parts: Any) -> str:
    """A short hash of everything a stage's output depends on: upstream keys, file digests, and the inputs it reads
    from the config. A dataclass part (a config section, or a stage's inputs) counts by its fields that affect
    results: an operational key (`lead_ray.config.OPERATIONAL`) never redoes a stage, and a key the stage does not
    read cannot, because it is not among its inputs."""
    values = [_key_part(p) for p in parts]
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _key_part(part: Any) -> Any:
    if dataclasses.is_dataclass(part) and not isinstance(part, type):
        return {f.name: _key_part(getattr(part, f.name)) for f in dataclasses.fields(part)
                if f.name not in OPERATIONAL}
    return part


def file_digest(path: str) -> str:
    """A data file's content hash: the pool's key depends on what the files hold, not where they are, so a job that
    sees the same files under another path (an uploaded working dir, a copy staged on another node) reuses it."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def stage_current(folder: Path, key: str, marker: Path | None = None) -> bool:
    marker = marker or folder / "stage.json"
    return marker.exists() and json.loads(marker.read_text()).get("key") == key


def mark_stage(folder: Path, key: str, marker: Path | None = None) -> None:
    (marker or folder / "stage.json").write_text(json.dumps({"key": key}))


def _marker(out: Path) -> Path:
    return out.with_name(out.name + ".stage.json")


def run_stage(name: str, out: Path, key: str, build: Callable[[Path], Any], log: Callable[[str], None]) -> bool:
    """Build `out` (a file or a folder) with `build(tmp_path)` unless it is complete and made from `key`.
    Returns True if the stage ran."""
    if out.exists() and stage_current(out.parent, key, _marker(out)):
        log(f"{name}: up to date, skipped")
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    _marker(out).unlink(missing_ok=True)
    tmp = out.with_name(out.name + ".partial")
    _remove(tmp)
    t0 = time.time()
    build(tmp)
    _remove(out)
    os.replace(tmp, out)
    mark_stage(out.parent, key, _marker(out))
    log(f"{name}: done in {time.time() - t0:.1f}s")
    return True


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
