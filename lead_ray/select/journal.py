"""The selection state on storage: one file per ended round (`round_00007.npz`), written once, never rewritten.

A round's file holds what that round changed (`RoundBook.round_record`): its rows' log entries, its (ḡ, u) and a
few JSON values. Resuming reads rounds 0..r-1 and replays them, so no file grows with the pool and nothing is
written twice. NumPy .npz without pickle: the JSON part travels as a uint8 array.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from lead_ray.runtime.storage import RunStorage


def encode_round(record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    meta = np.frombuffer(json.dumps(record["meta"]).encode(), dtype=np.uint8)
    np.savez(buf, meta=meta, **record["arrays"])
    return buf.getvalue()


def decode_round(data: bytes) -> dict[str, Any]:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return {"meta": json.loads(arrays.pop("meta").tobytes()), "arrays": arrays}


class SelectionJournal:
    """Round files in a folder of a run (a local path or `s3://…`, `gs://…`)."""

    def __init__(self, uri: str) -> None:
        self.uri, self.storage = uri, RunStorage.at(uri)

    @staticmethod
    def name(round_index: int) -> str:
        return f"round_{round_index:05d}.npz"

    def write(self, record: dict[str, Any]) -> int:
        """Store a round's record (replacing a file left by an interrupted attempt); returns its bytes."""
        data = encode_round(record)
        self.storage.write_bytes(data, self.name(record["meta"]["round"]))
        return len(data)

    def read(self, rounds: int) -> list[dict[str, Any]]:
        """Rounds 0..rounds-1, in order; a missing one is an error that names the file."""
        out = []
        for r in range(rounds):
            if not self.storage.exists(self.name(r)):
                raise FileNotFoundError(f"selection state {self.storage.uri(self.name(r))} is missing: the run's "
                                        f"checkpoint needs rounds 0..{rounds - 1} of {self.uri}")
            out.append(decode_round(self.storage.read_bytes(self.name(r))))
        return out
