"""A record, on the driver's own disk, of the files another library will unpickle on resume (Ray Tune's experiment
state), so that a resume refuses files that lead-ray did not see being written.

Tune's `Tuner.restore` unpickles `tuner.pkl`, its searcher's state and the trial states in the experiment folder,
which lives wherever the sweep's storage is: anyone who can write there could otherwise run code on the driver at
the next resume. The record is not kept next to the files (whoever can write one could write the other) but in the
driver's cache, so a resume trusts what this machine saw its own sweep write, and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pyarrow.fs as pafs

from lead_ray.runtime.storage import RunStorage

KEEP = 64  # digests kept per file: the state is rewritten every few seconds, and storage may lag behind the last


def state_digests(storage: RunStorage, *parts: str) -> dict[str, str]:
    """SHA-256 of every file directly in the folder (a resume reads these; trial folders hold no pickled state)."""
    out = {}
    for info in storage.fs.get_file_info(pafs.FileSelector(storage.path(*parts), allow_not_found=True)):
        if info.type == pafs.FileType.File:
            name = info.path.rsplit("/", 1)[-1]
            out[name] = hashlib.sha256(storage.read_bytes(*parts, name)).hexdigest()
    return out


class StateRecord:
    """The digests each state file has had while this driver ran the sweep, in `path` (on local disk)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: dict[str, list[str]] = json.loads(path.read_text()) if path.exists() else {}

    @classmethod
    def for_folder(cls, cache: Path, storage: RunStorage, *parts: str) -> StateRecord:
        where = hashlib.sha256(storage.uri(*parts).encode()).hexdigest()[:16]
        return cls(cache / "state-records" / f"{where}.json")

    def add(self, digests: dict[str, str]) -> None:
        """Remember these contents. Merged with the file as it is now: a resumed sweep's callback is a copy
        unpickled from Tune's state, whose own memory of the record is older."""
        if self.path.exists():
            for name, known in json.loads(self.path.read_text()).items():
                self.seen[name] = [*dict.fromkeys([*known, *self.seen.get(name, [])])][-KEEP:]
        changed = not self.path.exists()
        for name, digest in digests.items():
            known = self.seen.setdefault(name, [])
            if digest not in known:
                known[:] = [*known, digest][-KEEP:]
                changed = True
        if changed:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".partial")
            tmp.write_text(json.dumps(self.seen))
            os.replace(tmp, self.path)

    def unknown(self, digests: dict[str, str]) -> list[str]:
        """The files whose content this record never saw (all of them when there is no record)."""
        return sorted(name for name, digest in digests.items() if digest not in self.seen.get(name, []))
