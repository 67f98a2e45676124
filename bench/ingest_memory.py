"""The driver's memory during ingest alone: peak private memory (RssAnon) and peak Arrow buffers, at one pool size.

    python bench/ingest_memory.py 3000000   # raw JSONL written first (bench/prep.py's generator), then ingested

Samples /proc/self/status and `pyarrow.total_allocated_bytes()` every 0.1 s while `ingest` runs on 2 tokenizer
actors with SmolLM2's tokenizer. Compare sizes: the peaks should follow Ray Data's block size, not the pool.
The last line is `rows=<n> peak_private_gb=<g> peak_arrow_gb=<g>`.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow as pa
from prep import write_raw

from lead_ray.config import LeadConfig
from lead_ray.data.pool import ingest
from lead_ray.models.load import resolve_model_path
from lead_ray.runtime.ray_init import init_ray


def private_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    work = Path(tempfile.mkdtemp(prefix="lead-ray-ingest-memory-"))
    write_raw(work / "raw.jsonl", n)
    model = resolve_model_path("builtin:smollm2", Path("~/.cache/lead-ray").expanduser())
    init_ray(LeadConfig(num_cpus=3))
    peak = {"private": 0.0, "arrow": 0.0}

    def sample() -> None:
        while True:
            peak["private"] = max(peak["private"], private_gb())
            peak["arrow"] = max(peak["arrow"], pa.total_allocated_bytes() / 2**30)
            time.sleep(0.1)

    threading.Thread(target=sample, daemon=True).start()
    s = ingest([str(work / "raw.jsonl")], model, work / "pool", max_length=256, eval_fraction=0.0, concurrency=2)
    print(f"[bench] {s.line()}")
    print(f"rows={n} peak_private_gb={peak['private']:.2f} peak_arrow_gb={peak['arrow']:.2f}")


if __name__ == "__main__":
    main()
