"""A run whose output_dir is an S3 bucket (moto's S3 server on 127.0.0.1, a real S3 API), as `ray job submit` users
on a cluster without shared storage run it: every output, checkpoint and the prepared pool go to the bucket, nothing
to a local output folder, and a run resumes from the bucket alone."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lead_ray.config import load_config
from lead_ray.runtime.storage import RunStorage
from tests.conftest import REPO, TINY, seed_prepared
from tests.helpers import RELIABILITY_SETTINGS, checkpoints

sys.path.insert(0, str(REPO / "bench"))

pytestmark = pytest.mark.slow


def s3_run(tmp_path: Path, name: str, prepared: Path) -> tuple[list[str], RunStorage, Path]:
    """A jobs/lead.py command whose output_dir is a fresh prefix of the test bucket, its storage, and its node-local
    scratch folder (seeded with a prepared pool, as a rerun on this node would find it). IFD comes from a warm-up
    model, so the warm-up run goes through the bucket too."""
    overrides = {**RELIABILITY_SETTINGS, "ifd_model": "warmup", "output_dir": f"s3://lead-ray-test/{tmp_path.name}",
                 "run_name": name}
    cfg = load_config(TINY, overrides)
    shutil.rmtree(cfg.run_dir, ignore_errors=True)
    seed_prepared(prepared, cfg.run_dir)
    cmd = [sys.executable, str(REPO / "jobs" / "lead.py"), "--config", str(TINY), *[f"{k}={v}" for k, v in overrides.items()]]
    return cmd, RunStorage.at(cfg.run_uri), cfg.run_dir


def selections(storage: RunStorage, tmp_path: Path):
    storage.download(tmp_path / "sel.parquet", "selections.parquet")
    return pq.read_table(tmp_path / "sel.parquet").to_pandas()[["round", "id", "arm", "group", "idu_before"]]


@pytest.fixture(scope="module")
def bucket_run(s3_env, tiny_prepared, tmp_path_factory):
    """One uninterrupted run into the bucket, started from a folder with nothing in it; its storage and stdout."""
    tmp = tmp_path_factory.mktemp("s3")
    cmd, storage, scratch = s3_run(tmp, "ref", tiny_prepared)
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=900, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return storage, proc.stdout, tmp, scratch


def test_a_run_writes_its_outputs_to_the_bucket(bucket_run) -> None:
    storage, out, tmp, _ = bucket_run
    assert list(tmp.iterdir()) == [], "the run wrote into its working directory"
    for name in ("summary.json", "selections.parquet", "metrics.jsonl", "bandit.jsonl", "config.yaml",
                 "quarantine.parquet", "model/model.safetensors", "report/summary.md", "pool/pool.arrow",
                 "prep/enriched.parquet", "prep/score_warmup.parquet", "base_model/model.safetensors",
                 "ray/finished.json", "ray/selection/round_00000.npz", "warmup/merged/model.safetensors",
                 "warmup/ray/finished.json"):
        assert storage.exists(*name.split("/")), name
    assert checkpoints(storage), "no round checkpoint in the bucket"
    import json

    summary = json.loads(storage.read_text("summary.json"))
    assert summary["run_dir"] == storage.uri() and 0 < summary["num_unique"] <= summary["budget"]
    assert f"report: {storage.uri('report', 'summary.md')}" in out
    # the default warm-up (warmup_rows: selectable): a random warmup_fraction of the train rows, each once
    warm = json.loads(storage.read_text("warmup", "summary.json"))
    storage.download(tmp / "enriched.parquet", "prep", "enriched.parquet")
    storage.download(tmp / "warm.parquet", "warmup", "selections.parquet")
    split = pq.read_table(tmp / "enriched.parquet").column("split").to_numpy(zero_copy_only=False)
    fraction = load_config(TINY, RELIABILITY_SETTINGS).prep.warmup_fraction
    assert warm["num_unique"] == warm["budget"] == round(fraction * int((split == "train").sum()))
    ids = pq.read_table(tmp / "warm.parquet").column("id").to_numpy()
    assert len(set(ids)) == len(ids) == warm["budget"] and (split[ids] == "train").all()


def test_worker_then_driver_sigkill_resume_from_the_bucket_alone(bucket_run, tmp_path: Path) -> None:
    """A Train worker is SIGKILLed (the group restarts from the bucket's checkpoint), later the driver and its Ray
    instance are; the node's scratch folder is then deleted, and the rerun resumes from the bucket alone. The
    selections equal the uninterrupted run's."""
    from chaos import ray_processes

    reference, _, _, prepared = bucket_run
    cmd, storage, scratch = s3_run(tmp_path, "kill", prepared)
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True, env=os.environ.copy())
        seen: set[str] = set()  # every round checkpoint that appeared (the bucket keeps the last two)
        killed_worker, deadline = None, time.time() + 400
        while time.time() < deadline and proc.poll() is None:
            seen |= set(checkpoints(storage))
            workers = ray_processes("ray::RayTrainWorker", proc.pid) if killed_worker is None and len(seen) >= 2 \
                else []
            if workers:
                killed_worker = workers[0].pid
                os.kill(killed_worker, signal.SIGKILL)
            if killed_worker is not None and len(seen) >= 5:  # the restarted group made 3 more
                os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray instance it started
                break
            time.sleep(0.05)
        proc.wait(timeout=60)
    first = log.read_text()
    assert killed_worker is not None and proc.returncode == -signal.SIGKILL, first[-3000:]
    assert "resumed from checkpoint" in first and not storage.exists("summary.json")
    shutil.rmtree(scratch)  # a new node: nothing local, only the bucket
    time.sleep(2)
    rerun = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for line in ("the prepared pool so far came down", "ingest: up to date, skipped", "enriched pool: up to date",
                 "resuming the interrupted run", "resumed from checkpoint"):
        assert line in rerun.stdout, line
    assert selections(storage, tmp_path).equals(selections(reference, tmp_path / "ref"))
