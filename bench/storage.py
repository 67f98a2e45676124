"""Cloud storage costs, against a real S3 API on 127.0.0.1 (moto's threaded server; no network in the way).

Measures, for the built SmolLM2-135M model folder (about 540 MB in float32) and a round-checkpoint-sized folder
(the LoRA trainable weights + AdamW state of SmolLM2 at lora_rank 64, written as runs write them):
- upload: `RunStorage.upload` (files + SHA-256 manifest), and a re-upload that the manifest skips;
- staging on a node: `stage` cold (download + verify against the manifest) and warm (already on the node);
- the same bytes copied between two local folders, the baseline each figure is a ratio to.

The last line is `stage_cold_ratio=<stage / local copy> checkpoint_upload_s=<s> stage_model_s=<s>`.
Usage: python bench/storage.py [--model PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def checkpoint_folder(out: Path, lora_rank: int = 64, hidden: int = 576, layers: int = 30) -> Path:
    """A round checkpoint's files at SmolLM2-135M's shapes: LoRA A/B on the 7 linear layers of each block, and
    AdamW's two moments of each (float32), as `train/checkpoint.py` writes them."""
    rng = np.random.default_rng(0)
    shapes = {"q": (hidden, hidden), "k": (hidden, 192), "v": (hidden, 192), "o": (hidden, hidden),
              "gate": (hidden, 1536), "up": (hidden, 1536), "down": (1536, hidden)}
    weights = {}
    for layer in range(layers):
        for name, (fan_in, fan_out) in shapes.items():
            weights[f"l{layer}.{name}.A"] = rng.standard_normal((lora_rank, fan_in), dtype=np.float32)
            weights[f"l{layer}.{name}.B"] = rng.standard_normal((fan_out, lora_rank), dtype=np.float32)
    out.mkdir(parents=True)
    save_file(weights, str(out / "trainable.safetensors"))
    save_file({f"{k}.exp_avg": v for k, v in weights.items()} | {f"{k}.exp_avg_sq": v for k, v in weights.items()},
              str(out / "optimizer.safetensors"))
    return out


def measure(label: str, folder: Path, name: str, storage, tmp: Path) -> tuple:
    """(label, bytes, local copy s, upload s, skipped re-upload s, cold stage s, warm stage s) for one folder."""
    from lead_ray.runtime.storage import stage

    size = folder_bytes(folder)
    local = timed(lambda: shutil.copytree(folder, tmp / f"copy-{name}"))
    up = timed(lambda: storage.upload(folder, name))
    again = timed(lambda: storage.upload(folder, name))  # the manifest matches: skipped
    cold = timed(lambda: stage(storage.uri(name), tmp / "node-cache"))
    warm = timed(lambda: stage(storage.uri(name), tmp / "node-cache"))
    print(f"{label}: {size / 1e6:.0f} MB; local copy {local:.2f}s; upload {up:.2f}s ({up / local:.1f}x local, "
          f"{size / up / 1e6:.0f} MB/s); re-upload (skipped) {again:.2f}s; stage cold {cold:.2f}s "
          f"({cold / local:.1f}x local); stage warm {warm * 1000:.1f} ms", flush=True)
    return label, size, local, up, again, cold, warm


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="a model folder (default: the built builtin:smollm2)")
    args = p.parse_args()

    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=f"http://{host}:{port}")
    boto3.client("s3").create_bucket(Bucket="bench")

    from lead_ray.models.load import resolve_model_path
    from lead_ray.runtime.storage import RunStorage

    model = Path(args.model or resolve_model_path("builtin:smollm2", Path("~/.cache/lead-ray").expanduser()))
    storage = RunStorage.at("s3://bench/run")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = checkpoint_folder(tmp / "checkpoint")
        rows = [measure("model", model, "base_model", storage, tmp), measure("checkpoint", ckpt, "ckpt", storage, tmp)]
    server.stop()
    model_row, ckpt_row = rows
    print(f"stage_cold_ratio={model_row[5] / model_row[2]:.2f} checkpoint_upload_s={ckpt_row[3]:.2f} "
          f"stage_model_s={model_row[5]:.2f}")


if __name__ == "__main__":
    main()
