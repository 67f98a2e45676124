"""A run whose output_dir is an S3 bucket (moto's S3 server on 127.0.0.1, a real S3 API), as `ray job submit` users
on a cluster without shared storage run it: every output, checkpoint and the prepared pool go to the bucket, nothing
to a local output folder, and a run resumes from the bucket alone. The uninterrupted run and a Tune sweep (the optuna
searcher) are submitted with `ray job submit` to a real one-box head (every port on loopback, token auth on, as the
README shows it), unchanged."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from lead_ray.config import load_config
from lead_ray.runtime.storage import RunStorage
from tests.conftest import REPO, TINY, seed_prepared, seed_sweep
from tests.helpers import RELIABILITY_SETTINGS, check_run_outputs, checkpoints, free_port, stop_head

sys.path.insert(0, str(REPO / "bench"))

pytestmark = pytest.mark.slow


def s3_run(tmp_path: Path, name: str, prepared: Path) -> tuple[list[str], RunStorage, Path]:
    """jobs/lead.py's `key=value` arguments for a run whose output_dir is a fresh prefix of the test bucket, its
    storage, and its node-local scratch folder (seeded with a prepared pool, as a rerun on this node would find it).
    IFD comes from a warm-up model, so the warm-up run goes through the bucket too."""
    overrides = {**RELIABILITY_SETTINGS, "ifd_model": "warmup", "output_dir": f"s3://lead-ray-test/{tmp_path.name}",
                 "run_name": name}
    cfg = load_config(TINY, overrides)
    shutil.rmtree(cfg.run_dir, ignore_errors=True)
    seed_prepared(prepared, cfg.run_dir)
    return [f"{k}={v}" for k, v in overrides.items()], RunStorage.at(cfg.run_uri), cfg.run_dir


@pytest.fixture(scope="module")
def head(s3_env):
    """A one-box head as the README starts it (token auth, dashboard on loopback), with the bucket's endpoint and
    keys in its environment; yields a function that runs `ray job submit -- <args>` from the repo's root."""
    bin_dir = Path(sys.executable).parent
    # the jobs here upload the same working dir: Ray skips the upload of a package it holds, without renewing the
    # package's 10-minute lease, and one submitted as the lease ran out lost it under its running trials ("Failed
    # to download runtime_env file package", ray-project/ray#46625)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_RUNTIME_ENV_TEMPORARY_REFERENCE_EXPIRATION_S": "3600"}
    env.pop("RAY_ADDRESS", None)
    ray = str(bin_dir / "ray")
    port, dash, agent = free_port(), free_port(), free_port()
    subprocess.run([ray, "get-auth-token", "--generate"], env=env, capture_output=True, timeout=60, check=True)
    start = subprocess.run([ray, "start", "--head", f"--port={port}", "--dashboard-host=127.0.0.1",
                            f"--dashboard-port={dash}", "--num-cpus=4", "--include-dashboard=true",
                            # not the default 52365: another instance on the host (the suite's own) holds it, and
                            # a head without its job agent answers every submission "No available agent"
                            f"--dashboard-agent-listen-port={agent}", "--disable-usage-stats"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert start.returncode == 0, start.stderr[-2000:]
    address = f"http://127.0.0.1:{dash}"

    def submit(args: list[str]) -> subprocess.CompletedProcess:
        deadline = time.time() + 120
        while True:  # on a loaded machine the job agent can come up after the job server answers
            job = subprocess.run([ray, "job", "submit", "--address", address, "--working-dir", ".", "--", *args],
                                 cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
            if "No available agent to submit job" not in job.stderr or time.time() > deadline:
                return job
            time.sleep(2)

    try:
        deadline = time.time() + 60
        while time.time() < deadline:  # the job server comes up a moment after the head starts
            if subprocess.run([ray, "job", "list", "--address", address], env=env, capture_output=True).returncode == 0:
                break
            time.sleep(1)
        yield submit
    finally:
        stop_head(port)


def selections(storage: RunStorage, tmp_path: Path):
    storage.download(tmp_path / "sel.parquet", "selections.parquet")
    return pq.read_table(tmp_path / "sel.parquet").to_pandas()[["round", "id", "arm", "group", "idu_before"]]


@pytest.fixture(scope="module")
def bucket_run(head, tiny_prepared, tmp_path_factory):
    """One uninterrupted run into the bucket, submitted with `ray job submit`; its storage, stdout, a temporary
    folder and its node's scratch folder. The scratch is seeded with the session's prepared pool: the job runs from
    the uploaded working dir, where the bundled data files have other paths and times, and the stage keys hash the
    files' contents, so the pool is reused."""
    tmp = tmp_path_factory.mktemp("s3")
    args, storage, scratch = s3_run(tmp, "ref", tiny_prepared)
    job = head(["python", "jobs/lead.py", "--config", "configs/tiny.yaml", *args])
    assert job.returncode == 0, job.stdout[-3000:] + "\n" + job.stderr[-3000:]  # a str: shown whole
    assert "LEAD run summary" in job.stdout and "succeeded" in job.stdout
    for stage in ("ingest", "embed"):
        assert f"{stage}: up to date, skipped" in job.stdout, stage
    return storage, job.stdout, tmp, scratch


def test_a_run_writes_its_outputs_to_the_bucket(bucket_run) -> None:
    storage, out, tmp, _ = bucket_run
    for name in ("summary.json", "selections.parquet", "metrics.jsonl", "bandit.jsonl", "config.yaml",
                 "quarantine.parquet", "model/model.safetensors", "report/summary.md", "pool/pool.arrow",
                 "prep/enriched.parquet", "prep/score_warmup.parquet", "base_model/model.safetensors",
                 "ray/finished.json", "ray/selection/round_00000.npz", "warmup/merged/model.safetensors",
                 "warmup/ray/finished.json"):
        assert storage.exists(*name.split("/")), name
    assert checkpoints(storage), "no round checkpoint in the bucket"

    summary = json.loads(storage.read_text("summary.json"))
    assert summary["run_dir"] == storage.uri() and 0 < summary["num_unique"] <= summary["budget"]
    assert f"report: {storage.uri('report', 'summary.md')}" in out
    local = tmp / "run"  # the invariants of every finished run, on the bucket's files
    for name in ("config.yaml", "selections.parquet", "metrics.jsonl", "bandit.jsonl", "quarantine.parquet",
                 "summary.json", "model/model.safetensors", "prep/enriched.parquet"):
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        storage.download(local / name, *name.split("/"))
    assert check_run_outputs(local, expect_max_uses=RELIABILITY_SETTINGS["max_uses"]) == summary
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
    args, storage, scratch = s3_run(tmp_path, "kill", prepared)
    cmd = [sys.executable, str(REPO / "jobs" / "lead.py"), "--config", str(TINY), *args]  # from an empty folder
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, text=True,
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
    rerun = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for line in ("the prepared pool so far came down", "ingest: up to date, skipped", "enriched pool: up to date",
                 "resuming the interrupted run", "resumed from checkpoint"):
        assert line in rerun.stdout, line
    assert selections(storage, tmp_path).equals(selections(reference, tmp_path / "ref"))
    assert list(cwd.iterdir()) == [], "the run wrote into its working directory"


def test_ray_job_submit_sweep_into_the_bucket(head, tiny_prepared, tmp_path: Path) -> None:
    """The optuna searcher over a float and an integer range given by their aliases (b: smoothing, k: num_arms),
    into the bucket, as on a cluster without shared storage: the trials, Tune's own state and the results land
    there, nothing in a local folder."""
    uri = f"s3://lead-ray-test/{tmp_path.name}"
    scratch = load_config(TINY, {"output_dir": uri, "run_name": "sw"}).run_dir  # this node's, for the bucket
    shutil.rmtree(scratch, ignore_errors=True)
    seed_sweep(tiny_prepared, scratch)
    space = json.dumps({"b": ["loguniform", 0.05, 0.5], "k": ["uniform", 2, 4]}).replace(" ", "")
    sweep = head(["python", "tune/sweep.py", "--config", "configs/tiny.yaml", "--output-dir", uri, "--experiment",
                  "sw", "tune_searcher=optuna", "tune_num_samples=2", "max_rounds=2", f"tune_space={space}"])
    assert sweep.returncode == 0, sweep.stdout[-3000:] + "\n" + sweep.stderr[-3000:]
    assert "best_config.yaml" in sweep.stdout and "ingest: up to date, skipped" in sweep.stdout
    check_sweep_in_bucket(RunStorage.at(f"{uri}/sw"), tmp_path, trials=2, experiment="sw")
    table = pd.read_csv(tmp_path / "trials.csv")
    assert table["smoothing"].between(0.05, 0.5).all() and table["num_arms"].between(2, 4).all()


def check_sweep_in_bucket(store: RunStorage, tmp_path: Path, trials: int, experiment: str) -> None:
    """A Tune sweep whose output_dir is the bucket: its results, its shared pool, each trial's run and Tune's own
    state (for a resume) are there. Leaves trials.csv in `tmp_path`."""
    for name in ("trials.csv", "best_config.yaml", "sweep.json", "shared/prep/enriched.parquet",
                 "shared/pool/pool.arrow"):
        assert store.exists(*name.split("/")), name
    store.download(tmp_path / "trials.csv", "trials.csv")
    store.download(tmp_path / "best_config.yaml", "best_config.yaml")
    table = pd.read_csv(tmp_path / "trials.csv")
    assert len(table) == trials and (table["error"].fillna("") == "").all()
    for trial_id, stopped in zip(table["trial_id"], table["stopped_early"]):  # each trial is a run in the bucket
        trial = RunStorage(store.fs, store.path("trials", trial_id))
        assert checkpoints(trial), trial_id
        assert stopped or (trial.exists("summary.json") and trial.exists("selections.parquet")), trial_id
    assert not table["stopped_early"].all()
    infos = store.fs.get_file_info(pafs.FileSelector(store.path("tune", experiment)))
    assert any(i.base_name.startswith("experiment_state") for i in infos)
    best = load_config(tmp_path / "best_config.yaml")
    assert (best.selection.smoothing, best.selection.num_arms) in set(zip(table["smoothing"], table["num_arms"]))
