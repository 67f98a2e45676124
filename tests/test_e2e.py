"""End to end: jobs/lead.py on configs/tiny.yaml, directly, and 2 workers + LoRA against 1 worker in-process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, TINY, seed_prepared
from tests.helpers import check_run_outputs

pytestmark = pytest.mark.slow


def test_job_tiny_direct(tiny_job) -> None:
    """The session's `python jobs/lead.py --config configs/tiny.yaml` run, from scratch (tests/conftest.py)."""
    run, proc = tiny_job
    tmp_path = run.parent
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out
    assert "LEAD run summary" in proc.stdout and "held-out NLL after" in proc.stdout
    assert "rows read" in proc.stdout
    # a clean console: each lead-ray line once (workers' lines too), no deprecation warnings, and Ray Train's
    # per-report lines only with verbose: true
    lines = [line.split("[lead-ray] ", 1)[1] for line in out.splitlines() if "[lead-ray] " in line]
    assert any(line.startswith("round 0:") and line.endswith(" left") for line in lines)
    for stage in ("embed", "score"):  # long stages end on a progress line with rate and time left
        assert any(line.startswith(f"{stage}: 100% ") and " rows/s, " in line and " left)" in line
                   for line in lines), stage
    assert len(lines) == len(set(lines)), [line for line in lines if lines.count(line) > 1]
    noise = [line for line in out.splitlines() if "deprecat" in line.lower() or "Reporting training result" in line
             or "Starting execution of Dataset" in line or "Progress bars disabled" in line]
    assert not noise, noise
    s = check_run_outputs(tmp_path / "tiny", expect_max_uses=4)
    assert s["nll_after"] < s["nll_before"]
    # the same config and seed select what the code selected when the default selection last changed (stop 34:
    # quota proportional, truncate_top 0.5; tests/fixtures/tiny_selections.parquet, byte-identical over two runs on
    # the machine that made it, `cmp`): the choices exactly, the utilities to float precision, which another CPU's
    # kernels may round differently. The paper's maths are pinned by hand in tests/test_lead_selector.py
    got = pq.read_table(tmp_path / "tiny" / "selections.parquet").to_pandas()
    want = pq.read_table(REPO / "tests" / "fixtures" / "tiny_selections.parquet").to_pandas()
    assert list(got.columns) == list(want.columns)
    for col in ("round", "id", "arm", "group"):
        assert got[col].tolist() == want[col].tolist(), col
    for col in ("idu_before", "idu_after", "loss"):
        np.testing.assert_allclose(got[col], want[col], rtol=1e-5, err_msg=col)
    assert s["ifd_excluded"] >= 0 and "train rows excluded (IFD > 1)" in (tmp_path / "tiny" / "report" / "summary.md"
                                                                          ).read_text()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "tiny" / "model")  # plain transformers
    tok = AutoTokenizer.from_pretrained(tmp_path / "tiny" / "model")
    assert model.config.num_hidden_layers == 2 and tok.chat_template
    ingest = json.loads((tmp_path / "tiny" / "pool" / "ingest.json").read_text())
    assert ingest["read"] == ingest["kept"] + ingest["quarantined"] + ingest["capped"]

    # a rerun that fails before training leaves the finished run's outputs exactly as they were
    before = {p: p.read_bytes() for p in run.glob("*") if p.is_file()}
    for bad in ("model_name_or_path=/no/such/model", "eval_batch_size=0"):
        fail = subprocess.run([sys.executable, "jobs/lead.py", "--config", "configs/tiny.yaml", "--output-dir",
                               str(tmp_path), bad], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert fail.returncode == 2 and len(fail.stderr.strip().splitlines()) == 1, fail.stderr[-2000:]
        assert {p: p.read_bytes() for p in run.glob("*") if p.is_file()} == before
    assert (run / "model").is_dir() and (run / "ray").is_dir()


def test_two_workers_train_what_one_worker_would(tiny_prepared, tmp_path: Path) -> None:
    """The same LoRA run on 2 FSDP workers (2 rows each per optimizer step) and on 1 worker (2 micro-batches of 2
    rows per step): the same selections, per-sample losses, gradient ḡ per round and adapter weights, to 1e-5. A
    round's rows do not fill the last step, so padding rows must not dilute the 2-worker gradient. (DDP shares the
    padding and loss weighting, and trains what FSDP does: `test_fsdp_full_fine_tuning_matches_ddp`.)"""
    from safetensors.numpy import load_file

    from lead_ray.config import load_config
    from lead_ray.pipeline import run

    common = {"output_dir": str(tmp_path), "use_lora": True, "lora_rank": 4, "lora_alpha": 8, "lora_dropout": 0.0,
              "merge_adapter": True, "max_uses": 2, "max_rounds": 3, "per_device_train_batch_size": 2}
    runs = {}
    for name, overrides in (("one", {"num_workers": 1, "gradient_accumulation_steps": 2}),
                            ("fsdp", {"num_workers": 2, "gradient_accumulation_steps": 1,
                                      "parallel_strategy": "fsdp"})):
        seed_prepared(tiny_prepared, tmp_path / name)
        run(load_config(TINY, {**common, **overrides, "run_name": name}))
        check_run_outputs(tmp_path / name, expect_max_uses=2)
        sel = pq.read_table(tmp_path / name / "selections.parquet").to_pandas()
        metrics = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        runs[name] = (sel, metrics[:-1], load_file(tmp_path / name / "model" / "adapter_model.safetensors"))
    sel1, m1, w1 = runs["one"]
    assert len(m1) == 3 and any(m["num_samples"] % 4 for m in m1)  # a round ends on a part-filled step
    sel2, m2, w2 = runs["fsdp"]  # sharded weights, gradients and AdamW state train what one worker does
    assert sel1[["round", "id", "arm"]].equals(sel2[["round", "id", "arm"]])
    np.testing.assert_allclose(sel1["loss"], sel2["loss"], rtol=1e-5)
    for a, b in zip(m1, m2, strict=True):
        assert a["step"] == b["step"]
        np.testing.assert_allclose([a["grad_sq_norm"], a["train_loss"]], [b["grad_sq_norm"], b["train_loss"]],
                                   rtol=1e-5)
    assert w1.keys() == w2.keys() and len(w1) > 0
    for k in w1:
        np.testing.assert_allclose(w1[k], w2[k], atol=1e-5, err_msg=k)

    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "fsdp" / "model"  # the sharded run's adapter and merged model (rebuilt on the host)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "fsdp" / "merged")
    with_adapter = AutoModelForCausalLM.from_pretrained(adapter)  # transformers loads the peft adapter
    ids = np.arange(1, 20)[None]
    import torch

    with torch.no_grad():
        a = merged(input_ids=torch.from_numpy(ids)).logits
        b = with_adapter(input_ids=torch.from_numpy(ids)).logits
    assert torch.allclose(a, b, atol=1e-4)


def test_two_workers_iterative_rescore(tiny_prepared, tmp_path: Path) -> None:
    """The expensive baseline through the real loop: before each round both workers score their half of the
    eligible rows with the current model; the run then trains exactly budget × max_uses presentations."""
    from lead_ray.config import load_config
    from lead_ray.pipeline import prepare_stages
    from lead_ray.train.fit import train_with_selection

    seed_prepared(tiny_prepared, tmp_path / "rescore")
    cfg = load_config(TINY, {
        "output_dir": str(tmp_path), "run_name": "rescore", "num_workers": 2, "selector": "iterative_rescore",
        "reuse_after_budget": True, "max_uses": 2, "max_rounds": 1000, "per_device_train_batch_size": 3})
    s = train_with_selection(cfg, prepare_stages(cfg, cfg.run_dir))
    check_run_outputs(tmp_path / "rescore", expect_max_uses=2)
    sel = pq.read_table(tmp_path / "rescore" / "selections.parquet").to_pandas()
    assert s["stop_reason"] == "budget" and s["num_unique"] == s["budget"]
    assert len(sel) == 2 * s["budget"] and (sel.groupby("id").size() == 2).all()
    assert s["selection_seconds"] > 0


def test_a_diverging_run_stops_in_one_line_and_publishes_nothing(tiny_prepared, tmp_path: Path) -> None:
    """learning_rate=1e30 makes the loss NaN after the first step: the run stops at the end of that round, is not
    retried (max_failures stays 3), and publishes no model or summary."""
    from lead_ray.config import load_config
    from lead_ray.pipeline import run
    from lead_ray.train.fit import RunError

    seed_prepared(tiny_prepared, tmp_path / "nan")
    cfg = load_config(TINY, {"output_dir": str(tmp_path), "run_name": "nan", "learning_rate": 1e30, "max_rounds": 2,
                             "max_grad_norm": 0.0, "per_device_train_batch_size": 1})
    with pytest.raises(RunError, match=r"training stopped: the training loss is (nan|inf) in round \d+") as e:
        run(cfg)
    assert "\n" not in str(e.value) and "overwrite_output_dir=true" in str(e.value)
    assert not (tmp_path / "nan" / "summary.json").exists() and not (tmp_path / "nan" / "model").exists()
    with pytest.raises(RunError, match="training stopped: the training loss"):  # the same rerun stops again
        run(cfg)
    # a lower learning rate is another result key: refused unless the checkpoints may go
    with pytest.raises(RunError, match="other values of learning_rate;"):
        run(load_config(TINY, {**cfg.to_dict(), "learning_rate": 1e-4}))


def test_an_error_a_restart_would_meet_again_is_not_retried(tiny_prepared, tmp_path: Path) -> None:
    """A pool store that lost rows (as one from another ingest would be) makes the first attempt fail with an
    IndexError inside a Train worker. The restarted group stops on the recorded error before loading the model,
    instead of failing max_failures more times; the driver says so in one line and publishes nothing."""
    import pyarrow as pa

    from lead_ray.config import load_config
    from lead_ray.pipeline import run
    from lead_ray.train.fit import RunError

    run_dir = seed_prepared(tiny_prepared, tmp_path / "short")
    store = run_dir / "pool" / "pool.arrow"
    with pa.ipc.open_file(store) as f:
        first_rows = f.read_all().slice(0, 2)
    with pa.ipc.new_file(store, first_rows.schema) as f:
        f.write_table(first_rows)
    cfg = load_config(TINY, {"output_dir": str(tmp_path), "run_name": "short", "max_rounds": 2, "max_failures": 3})
    with pytest.raises(RunError, match=r"training stopped: IndexError on rank 0: row id \d+ is outside the pool "
                                       r"\(0\.\.1\) \(not retried") as e:
        run(cfg)
    assert "\n" not in str(e.value) and "Fix its cause" in str(e.value)
    assert not (run_dir / "summary.json").exists() and not (run_dir / "model").exists()
    assert not (run_dir / "ray").exists()  # it failed before its first round checkpoint: nothing to resume


def test_a_run_over_its_memory_limit_stops_before_loading_weights(tiny_prepared, tmp_path: Path) -> None:
    """The worker's estimate against `memory_limit_gb` (on a GPU: the device's memory): one line, no retries, nothing
    published."""
    from lead_ray.config import load_config
    from lead_ray.pipeline import run
    from lead_ray.train.fit import RunError

    seed_prepared(tiny_prepared, tmp_path / "oom")
    cfg = load_config(TINY, {"output_dir": str(tmp_path), "run_name": "oom", "memory_limit_gb": 1e-4})
    with pytest.raises(RunError, match=r"training stopped: a worker needs about [0-9.]+ GiB per worker at its peak") \
            as e:
        run(cfg)
    assert "\n" not in str(e.value) and "memory_limit_gb" in str(e.value)
    assert not (tmp_path / "oom" / "summary.json").exists() and not (tmp_path / "oom" / "model").exists()
    # nothing was trained, so nothing is kept to resume: a rerun with another result key is estimated afresh,
    # not refused as a change to an interrupted run
    assert not (tmp_path / "oom" / "ray").exists()
    with pytest.raises(RunError, match="training stopped: a worker needs about"):
        run(load_config(TINY, {**cfg.to_dict(), "gradient_checkpointing": True}))


def test_fsdp_full_fine_tuning_matches_ddp(tiny_prepared, tmp_path: Path) -> None:
    """Full fine-tuning (every weight trained, ΔL′ over the last block) on 2 workers: FSDP's sharded run selects,
    trains and saves what DDP's does."""
    from safetensors.numpy import load_file

    from lead_ray.config import load_config
    from lead_ray.pipeline import run

    common = {"output_dir": str(tmp_path), "use_lora": False, "learning_rate": 1e-4, "max_rounds": 2,
              "per_device_train_batch_size": 2, "num_workers": 2}
    runs = {}
    for name in ("ddp", "fsdp"):
        seed_prepared(tiny_prepared, tmp_path / name)
        run(load_config(TINY, {**common, "run_name": name, "parallel_strategy": name}))
        sel = pq.read_table(tmp_path / name / "selections.parquet").to_pandas()
        runs[name] = (sel, load_file(tmp_path / name / "model" / "model.safetensors"))
    (s1, w1), (s2, w2) = runs["ddp"], runs["fsdp"]
    assert s1[["round", "id", "arm"]].equals(s2[["round", "id", "arm"]]) and len(s1) > 0
    np.testing.assert_allclose(s1["loss"], s2["loss"], rtol=1e-5)
    assert w1.keys() == w2.keys() and len(w1) > 10
    for k in w1:
        np.testing.assert_allclose(w1[k], w2[k], atol=1e-5, err_msg=k)
