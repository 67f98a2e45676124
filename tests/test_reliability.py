"""Determinism and worker failure on configs/tiny.yaml, with real processes and a real SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pyarrow.parquet as pq
import pytest

from lead_ray.config import LeadConfig, load_config
from tests.conftest import REPO, TINY, seed_prepared
from tests.helpers import RELIABILITY_SETTINGS, check_run_outputs

sys.path.insert(0, str(REPO / "bench"))  # bench/chaos.py: fault injection, shared with bench/faults.py

pytestmark = pytest.mark.slow
def _cfg(tmp_path: Path, name: str, prepared: Path) -> LeadConfig:
    """The run `name` under `tmp_path`, seeded with the session's prepared tiny pool."""
    seed_prepared(prepared, tmp_path / name)
    return load_config(TINY, {**RELIABILITY_SETTINGS, "output_dir": str(tmp_path), "run_name": name})


def _cmd(tmp_path: Path, name: str, prepared: Path) -> list[str]:
    """`_cfg` as a jobs/lead.py command line."""
    seed_prepared(prepared, tmp_path / name)
    return [sys.executable, "jobs/lead.py", "--config", str(TINY), "--output-dir", str(tmp_path),
            f"run_name={name}", *[f"{k}={v}" for k, v in RELIABILITY_SETTINGS.items()]]


def _selections(run_dir: Path) -> pd.DataFrame:
    return pq.read_table(run_dir / "selections.parquet").to_pandas()[["round", "id", "arm", "group", "idu_before"]]


def _run_and_kill(cfg: LeadConfig, title: str, **when: int) -> tuple[dict[str, Any], int | None]:
    from chaos import run_with_kill

    out, killed = run_with_kill(cfg, title, **when)
    assert killed is not None, f"the run finished before {title} could be killed"
    return out, killed


@pytest.fixture(scope="module")
def reference(tiny_prepared, tmp_path_factory) -> tuple[dict, pd.DataFrame, Path]:
    """One uninterrupted run: its summary, its selections and its folder. Every other run here uses the same config
    and seed from scratch, with a failure injected, and must select exactly what this one did: that is the
    determinism check, made over and over."""
    from lead_ray.pipeline import run

    tmp = tmp_path_factory.mktemp("ref")
    first = run(_cfg(tmp, "a", tiny_prepared))
    ref = _selections(tmp / "a")
    assert len(ref) > 0 and ref["round"].nunique() == first["rounds"] >= 2
    return first, ref, tmp / "a"


def test_worker_kill_between_sparse_checkpoints_redoes_the_rounds_since_identically(reference, tiny_prepared,
                                                                                    tmp_path: Path) -> None:
    """save_every_rounds=2: checkpoints after rounds 1, 3, ...; the Train worker is SIGKILLed once round 2 is in
    the journal but not in a checkpoint, so the restart from round 1's checkpoint redoes round 2 (the journal's file
    for it is rewritten), and the run ends as the uninterrupted one did. Another Ray instance's worker on this host
    survives the kill."""
    from tests.helpers import outside_process

    first, ref, _ = reference
    cfg = _cfg(tmp_path, "sparse", tiny_prepared).replace(save_every_rounds=2)
    with outside_process("ray::RayTrainWorker") as other:
        _, killed = _run_and_kill(cfg, "ray::RayTrainWorker", after_checkpoints=1, after_rounds=3)
        assert killed != other and psutil.Process(other).status() != psutil.STATUS_ZOMBIE
    assert not psutil.pid_exists(killed) or psutil.Process(killed).status() == psutil.STATUS_ZOMBIE
    summary = check_run_outputs(tmp_path / "sparse", expect_max_uses=RELIABILITY_SETTINGS["max_uses"])
    assert summary["num_unique"] == first["num_unique"]  # the unique-sample budget is exact
    assert _selections(tmp_path / "sparse").equals(ref)  # rounds after the restart match the uninterrupted run


def test_selection_actor_kill_restarts_and_restores(reference, tiny_prepared, tmp_path: Path) -> None:
    first, ref, _ = reference
    _run_and_kill(_cfg(tmp_path, "s", tiny_prepared), "ray::SelectionService")
    summary = check_run_outputs(tmp_path / "s", expect_max_uses=RELIABILITY_SETTINGS["max_uses"])  # every loss arrived
    assert summary["num_unique"] == first["num_unique"]
    assert _selections(tmp_path / "s").equals(ref)  # restored state + resent losses: nothing changed


def test_rerun_after_death_past_the_final_report(reference) -> None:
    """The driver died after the final checkpoint but before writing summary.json: the rerun resumes from the
    final checkpoint (selection state included) and trains nothing more. The reference's run plays the dead one
    (the other tests read only what the fixture returned, which is in memory)."""
    from lead_ray.pipeline import run

    first, ref, finished = reference
    (finished / "summary.json").unlink()
    (finished / "selections.parquet").unlink()
    (finished / "ray" / "finished.json").unlink()  # written after the outputs are published
    again = run(load_config(TINY, {**RELIABILITY_SETTINGS, "output_dir": str(finished.parent), "run_name": finished.name}))
    assert again["num_unique"] == first["num_unique"] and again["nll_after"] == first["nll_after"]
    assert _selections(finished).equals(ref)


def test_ctrl_c_says_where_it_stopped_and_the_rerun_resumes(reference, tiny_prepared, tmp_path: Path) -> None:
    """Ctrl-C after two round checkpoints: exit 130 and one line that says what to do; the same command then
    resumes from the last checkpoint, skips every preparation stage, and ends as the uninterrupted run did. (A
    SIGKILL of the driver and its Ray instance, then a rerun, is tests/test_cloud_storage.py's kill test.)"""
    first, ref, _ = reference
    cmd = _cmd(tmp_path, "c", tiny_prepared)
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    ckpt_root = tmp_path / "c" / "ray" / "train"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if ckpt_root.exists() and len(list(ckpt_root.glob("checkpoint_*"))) >= 2:
            os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the driver
            break
        time.sleep(0.02)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("lead-ray: interrupted after round ") and last.endswith(
        "; rerun the same command to resume"), last
    assert not (tmp_path / "c" / "summary.json").exists()
    rerun = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for line in ("ingest: up to date, skipped", "embed: up to date, skipped", "score (base model): up to date, skipped",
                 "enriched pool: up to date, skipped", "resuming the interrupted run", "resumed from checkpoint"):
        assert line in rerun.stdout + rerun.stderr, line
    summary = check_run_outputs(tmp_path / "c", expect_max_uses=RELIABILITY_SETTINGS["max_uses"])
    assert summary["num_unique"] == first["num_unique"]
    assert _selections(tmp_path / "c").equals(ref)
