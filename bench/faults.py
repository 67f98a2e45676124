"""Fault recovery on configs/tiny.yaml: an uninterrupted run, one with a training worker SIGKILLed, one with the
SelectionService SIGKILLed (in one process on one local Ray instance, after an untimed warm-up run), and one with
the driver itself SIGKILLed mid-run (`jobs/lead.py` in its own process group, with the Ray instance it started)
and then rerun with the same command.

For each failure it prints the extra wall time as a ratio to the uninterrupted run, and whether the accounting was
exact: the run finished, no duplicate (round, id), the same unique-sample count, and selections identical to the
uninterrupted run. The driver kill's time includes starting Ray twice (about 5 s each here).
Last line: `faults_survived=<n>/3 max_recovery_overhead=<ratio>`.
Run: `.venv/bin/python bench/faults.py [--runs-dir DIR]`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pyarrow.parquet as pq  # noqa: E402
from chaos import run_with_kill  # noqa: E402

from lead_ray.config import REPO_ROOT, LeadConfig, load_config  # noqa: E402
from lead_ray.runtime.ray_init import init_ray  # noqa: E402

# Rounds long enough for a kill to land mid-run (tiny.yaml with batch 1 and more rounds).
SETTINGS = {"per_device_train_batch_size": 1, "budget": 0.3, "sample_rate": 0.1, "max_rounds": 8, "max_uses": 2}
COLUMNS = ["round", "id", "arm", "group", "idu_before"]


def config(runs_dir: Path, name: str) -> LeadConfig:  # noqa: D103
    return load_config(REPO_ROOT / "configs" / "tiny.yaml", {**SETTINGS, "output_dir": str(runs_dir), "run_name": name})


def timed(cfg: LeadConfig, title: str | None) -> tuple[float, dict, int | None, str]:
    t0 = time.time()
    try:
        summary, killed = run_with_kill(cfg, title)
    except Exception as e:  # a failed recovery is a result, not a crash of the benchmark
        return time.time() - t0, {}, None, f"{type(e).__name__}: {e}"
    return time.time() - t0, summary, killed, ""


def driver_kill(cfg: LeadConfig, after_checkpoints: int = 2, timeout_s: float = 600
                ) -> tuple[float, dict, int | None, str]:
    """SIGKILL `jobs/lead.py` (and the local Ray instance it started) once `after_checkpoints` rounds are
    checkpointed, then rerun the same command; (wall time of both, the summary, the killed pid, an error)."""
    import json

    cmd = [sys.executable, "jobs/lead.py", "--config", "configs/tiny.yaml", "--output-dir", cfg.run.output_dir,
           f"run_name={cfg.run.run_name}", *[f"{k}={v}" for k, v in SETTINGS.items()]]
    shutil.rmtree(cfg.run_dir / "ray", ignore_errors=True)  # the last run's checkpoints: count only new ones
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    ckpt_root, killed = cfg.run_dir / "ray" / "train", None
    while time.time() - t0 < timeout_s and proc.poll() is None:
        if ckpt_root.exists() and len(list(ckpt_root.glob("checkpoint_*"))) >= after_checkpoints:
            killed = proc.pid
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    rerun = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s)
    wall = time.time() - t0
    if rerun.returncode != 0:
        return wall, {}, killed, (rerun.stderr.strip().splitlines() or ["rerun failed"])[-1]
    if "resumed from checkpoint" not in rerun.stdout + rerun.stderr:
        return wall, {}, killed, "the rerun did not resume from a checkpoint"
    return wall, json.loads((cfg.run_dir / "summary.json").read_text()), killed, ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", default=None)
    args = parser.parse_args()
    runs = Path(args.runs_dir or tempfile.mkdtemp(prefix="lead-ray-faults-"))
    init_ray(LeadConfig.from_flat(num_cpus=4))

    # All runs share one run folder: ingest and scoring happen once, in the untimed warm-up run, and each later
    # run retrains from scratch (a rerun of a finished run starts training afresh), so only training is compared.
    cfg = config(runs, "faults")
    timed(cfg, None)
    base_s, base, _, err = timed(cfg, None)
    if err:
        raise SystemExit(f"the uninterrupted run failed: {err}")
    ref = pq.read_table(cfg.run_dir / "selections.parquet").to_pandas()[COLUMNS]
    print(f"{'run':<22} {'wall s':>7} {'overhead':>9}  exact  note")
    print(f"{'uninterrupted':<22} {base_s:7.1f} {1.0:9.2f}  -      rounds={base['rounds']} unique={base['num_unique']}")
    survived, overheads = 0, []
    for name, title in (("worker_kill", "ray::RayTrainWorker"), ("actor_kill", "ray::SelectionService"),
                        ("driver_kill_rerun", "driver")):
        wall, summary, killed, err = driver_kill(cfg) if title == "driver" else timed(cfg, title)
        exact = False
        if not err and killed is not None:
            sel = pq.read_table(cfg.run_dir / "selections.parquet").to_pandas()
            exact = (not sel.duplicated(["round", "id"]).any() and summary["num_unique"] == base["num_unique"]
                     and sel[COLUMNS].equals(ref))
        note = err or ("no process was killed (run too short)" if killed is None else f"killed pid {killed}")
        survived += int(exact)
        overheads.append(wall / base_s)
        print(f"{name:<22} {wall:7.1f} {wall / base_s:9.2f}  {'yes' if exact else 'NO ':<5}  {note}")
    print(f"faults_survived={survived}/3 max_recovery_overhead={max(overheads):.2f}")


if __name__ == "__main__":
    main()
