"""`lead-ray prepare` end to end: embedding groups, warm-up-model IFD arms, the enriched schema, and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO

LEAD_RAY = str(Path(sys.executable).parent / "lead-ray")
ENRICHED_COLUMNS = ["id", "source", "split", "group", "arm", "iu0", "ifd", "ifd_excluded", "ref_loss",
                    "n_prompt_tokens", "n_response_tokens"]


# warmup_rows: reserved (RHO-LOSS's holdout): the warm-up trains on exactly a seeded reference split, once each, and
# those rows are never selectable. The default (selectable) warm-up runs in tests/test_cloud_storage.py's bucket run.
PREP = {"max_samples": 300, "ifd_model": "warmup", "warmup_fraction": 0.05, "warmup_rows": "reserved"}


def _prepare(out: Path, capsys, **overrides) -> str:
    """`lead-ray prepare` in-process, on the suite's Ray instance; returns what it printed."""
    from lead_ray.config import load_config
    from lead_ray.pipeline import prepare_stages

    capsys.readouterr()
    cfg = load_config(REPO / "configs" / "tiny.yaml", {**PREP, "output_dir": str(out), **overrides})
    prepare_stages(cfg, cfg.run_dir)
    return capsys.readouterr().out


def _reserved(train: np.ndarray) -> np.ndarray:
    from lead_ray.prep.prepare import reference_split

    return reference_split(train, PREP["warmup_fraction"], 0)


def _check_enriched(prep: Path, num_arms: int) -> dict:
    t = pq.read_table(prep / "enriched.parquet")
    assert t.column_names == ENRICHED_COLUMNS
    e = {c: t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names}
    pool = pq.read_table(prep.parent / "pool" / "pool.parquet").to_pandas()
    n = len(pool)
    assert n == 300 and np.array_equal(e["id"], np.arange(n))  # nothing lost, dense ids in order
    train = e["split"] == "train"
    excluded = e["ifd_excluded"]
    np.testing.assert_array_equal(excluded, train & (e["ifd"] > 1))  # ifd_above_one: exclude, the default
    selectable = train & ~excluded & ~_reserved(train)
    assert (e["arm"][~selectable] == -1).all() and set(e["arm"][selectable]) == set(range(num_arms))
    assert np.isfinite(e["ref_loss"]).all() and (e["ref_loss"] > 0).all()  # the warm-up model's NLL
    assert set(e["group"]) <= set(range(8)) and len(set(e["group"])) >= 3  # embedding k-means, K = 8
    assert np.isfinite(e["iu0"]).all() and (e["iu0"] > 0).all()
    assert np.isfinite(e["ifd"]).all() and (e["ifd"] > 0).all()
    assert np.array_equal(e["n_response_tokens"], pool["n_response_tokens"].to_numpy())
    # arms are 1-D k-means on ifd, ordered by centroid: every row of arm k has ifd below every row of arm k+2
    for k in range(num_arms - 2):
        assert e["ifd"][e["arm"] == k].max() <= e["ifd"][e["arm"] == k + 2].min()
    assert e["ifd"][selectable].max() <= 1.0
    return e


@pytest.mark.slow
def test_prepare_interrupted_after_a_stage_resumes_and_skips_it(ray_local, tmp_path: Path, capsys) -> None:
    """The killed run is `lead-ray prepare` in its own process; the reruns run in-process, as the CLI does."""
    prep = tmp_path / "tiny" / "prep"
    cmd = [LEAD_RAY, "prepare", "--config", "configs/tiny.yaml", "--output-dir", str(tmp_path),
           *[f"{k}={v}" for k, v in PREP.items()]]
    log_file = tmp_path / "prepare.log"
    with log_file.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (prep / "embeddings.parquet.stage.json").exists():
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray instance it started
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, ("prepare finished before it could be interrupted:\n"
                                                + log_file.read_text()[-3000:])
    assert not (prep / "enriched.parquet").exists()
    embedded_at = (prep / "embeddings.parquet").stat().st_mtime_ns
    time.sleep(2)

    log = _prepare(tmp_path, capsys)
    assert "embed: up to date, skipped" in log and "embed: done" not in log
    assert (prep / "embeddings.parquet").stat().st_mtime_ns == embedded_at  # not rewritten
    for stage in ("groups: done", "score (base model): done", "warm-up model: done", "score (warm-up model): done",
                  "enriched pool: done"):
        assert stage in log, stage
    first = _check_enriched(prep, num_arms=3)

    # the warm-up was the same TorchTrainer loop with the random selector, on exactly the reserved reference split
    # (5% of the train split, seeded), each row once; no reserved row is selectable, so every selectable row's
    # ref_loss is from a model that never saw it
    warm = prep / "warmup" / "run"
    summary = json.loads((warm / "summary.json").read_text())
    train = first["split"] == "train"
    reserved = _reserved(train)
    assert reserved.sum() == round(PREP["warmup_fraction"] * train.sum()) and not reserved[~train].any()
    assert summary["num_unique"] == summary["budget"] == reserved.sum()
    warm_ids = pq.read_table(warm / "selections.parquet").column("id").to_numpy()
    assert sorted(warm_ids.tolist()) == np.flatnonzero(reserved).tolist()  # the warm-up trained on exactly them, once
    np.testing.assert_array_equal(first["arm"] >= 0, train & ~reserved & ~first["ifd_excluded"])
    assert f"warm-up rows: {int(reserved.sum())} reserved" in log
    assert (warm / "merged" / "model.safetensors").exists()

    # a partial stage (output without its marker) is redone; a later-only change redoes only the later stage
    (prep / "groups.parquet.stage.json").unlink()
    log = _prepare(tmp_path, capsys, num_arms=2)
    for stage in ("embed", "score (base model)", "warm-up model", "score (warm-up model)"):
        assert f"{stage}: up to date, skipped" in log, stage
    assert "groups: done" in log and "enriched pool: done" in log
    second = _check_enriched(prep, num_arms=2)
    np.testing.assert_array_equal(first["ifd"], second["ifd"])
    np.testing.assert_array_equal(first["group"], second["group"])  # seeded k-means: the same groups again

    # ifd_above_one: cap keeps every train row outside the reserved split selectable, with IFD 1 where it was above (only the last stage reruns)
    assert "enriched pool: done" in _prepare(tmp_path, capsys, num_arms=2, ifd_above_one="cap")
    t = pq.read_table(prep / "enriched.parquet").to_pandas()
    train = (t["split"] == "train").to_numpy()
    assert not t["ifd_excluded"].any()
    np.testing.assert_array_equal(t["arm"].to_numpy() >= 0, train & ~_reserved(train))
    np.testing.assert_array_equal(t["ifd"].to_numpy(), np.minimum(first["ifd"], 1.0))
    print(f"train rows with IFD > 1 in the tiny pool: {int(second['ifd_excluded'].sum())}")


def test_missing_embedding_model_is_one_line_before_any_work(tmp_path: Path) -> None:
    proc = subprocess.run([LEAD_RAY, "prepare", "--config", "configs/tiny.yaml", "--output-dir", str(tmp_path),
                           "embedding_model=/no/such/model"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["lead-ray: error: config key 'embedding_model': no such folder "
                                                "/no/such/model"]
    assert not (tmp_path / "tiny" / "pool").exists()  # nothing started
