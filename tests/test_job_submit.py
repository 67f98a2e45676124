"""`ray job submit` against a real one-box head (every port on loopback, token auth on, as the README shows it):
jobs/lead.py, and tune/sweep.py with the optuna searcher into an S3 bucket (moto's server), unchanged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pytest

from lead_ray.config import load_config
from lead_ray.runtime.storage import RunStorage
from tests.conftest import REPO, TINY, seed_prepared, seed_sweep
from tests.helpers import check_run_outputs, checkpoints, free_port, stop_head

pytestmark = pytest.mark.slow


def test_ray_job_submit_tiny(s3_env, tiny_prepared, tmp_path: Path) -> None:
    """Both jobs are seeded with the session's prepared pool. They run from the uploaded working dir, where the
    bundled data files have other paths and times: the stage keys hash the files' contents, so the pool is reused."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
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
    try:
        address = f"http://127.0.0.1:{dash}"
        deadline = time.time() + 60
        while time.time() < deadline:  # the job server comes up a moment after the head starts
            if subprocess.run([ray, "job", "list", "--address", address], env=env, capture_output=True).returncode == 0:
                break
            time.sleep(1)
        out = tmp_path / "out"
        seed_prepared(tiny_prepared, out / "tiny")
        deadline = time.time() + 120
        while True:  # on a loaded machine the job agent can come up after the job server answers
            job = subprocess.run([ray, "job", "submit", "--address", address, "--working-dir", ".", "--",
                                  "python", "jobs/lead.py", "--config", "configs/tiny.yaml", "--output-dir",
                                  str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
            if "No available agent to submit job" not in job.stderr or time.time() > deadline:
                break
            time.sleep(2)
        assert job.returncode == 0, job.stdout[-3000:] + "\n" + job.stderr[-3000:]  # a str: shown whole
        assert "LEAD run summary" in job.stdout and "succeeded" in job.stdout
        for stage in ("ingest", "embed", "score (base model)"):
            assert f"{stage}: up to date, skipped" in job.stdout, stage
        s = check_run_outputs(out / "tiny", expect_max_uses=4)
        assert json.loads((out / "tiny" / "summary.json").read_text()) == s

        # the optuna searcher over a float and an integer range given by their aliases (b: smoothing, k: num_arms),
        # into a bucket (moto's S3 server; the head has its endpoint and keys in its environment), as on a cluster
        # without shared storage: the trials, Tune's own state and the results land there, nothing in a local folder
        uri = f"s3://lead-ray-test/{tmp_path.name}"
        scratch = load_config(TINY, {"output_dir": uri, "run_name": "sw"}).run_dir  # this node's, for the bucket
        shutil.rmtree(scratch, ignore_errors=True)
        seed_sweep(tiny_prepared, scratch)
        space = json.dumps({"b": ["loguniform", 0.05, 0.5], "k": ["uniform", 2, 4]}).replace(" ", "")
        sweep = subprocess.run([ray, "job", "submit", "--address", address, "--working-dir", ".", "--",
                                "python", "tune/sweep.py", "--config", "configs/tiny.yaml", "--output-dir",
                                uri, "--experiment", "sw", "tune_searcher=optuna", "tune_num_samples=2",
                                "max_rounds=2", f"tune_space={space}"],
                               cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert sweep.returncode == 0, sweep.stdout[-3000:] + "\n" + sweep.stderr[-3000:]
        assert "best_config.yaml" in sweep.stdout and "ingest: up to date, skipped" in sweep.stdout
        check_sweep_in_bucket(RunStorage.at(f"{uri}/sw"), tmp_path, trials=2, experiment="sw")
        table = pd.read_csv(tmp_path / "trials.csv")
        assert table["smoothing"].between(0.05, 0.5).all() and table["num_arms"].between(2, 4).all()
        assert not (out / "sw").exists()
    finally:
        stop_head(port)


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
