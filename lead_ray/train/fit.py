"""One LEAD training run on a prepared pool: the SelectionService, the TorchTrainer fit, the run's outputs.

The pipeline calls it for a run, the IFD warm-up for its short training, and the sweep for each Tune trial.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from lead_ray.config import LeadConfig, LeadRayError, result_changes, result_values
from lead_ray.data.prepared import PreparedPool
from lead_ray.runtime.console import log
from lead_ray.runtime.folders import FINISHED, OUTPUTS, claim_folder, publish_outputs
from lead_ray.runtime.run_files import write_run_files
from lead_ray.runtime.stages import stage_key
from lead_ray.runtime.storage import RunStorage
from lead_ray.runtime.tracking import Tracking
from lead_ray.select.params import SelectionParams
from lead_ray.select.service import start_service
from lead_ray.train.checkpoint import STOPPED, read_history
from lead_ray.train.tracking import TrackingCallback
from lead_ray.train.trainer import build_trainer


class RunError(LeadRayError, RuntimeError):
    """A run that failed after it started; the message is one line and points at the details."""


def train_with_selection(cfg: LeadConfig, prepared: PreparedPool, callbacks: list | None = None,
                         started: float | None = None, tracking: Tracking | None = None) -> dict[str, Any]:
    """Start this run's SelectionService, run the TorchTrainer, and write the run's outputs. `started`: when the
    run began (its `wall_seconds` count from there; default now); `tracking`: report_to's runs, opened."""
    import ray

    t_start = started or time.time()
    run_dir, storage = cfg.run_dir, RunStorage.at(cfg.run_uri)
    claim_folder(run_dir)
    enriched = pq.read_table(prepared.enriched, columns=["id", "split", "arm", "ifd_excluded"])
    split = enriched.column("split").to_numpy(zero_copy_only=False)
    eval_ids = enriched.column("id").to_numpy()[split == "eval"]
    excluded = int(enriched.column("ifd_excluded").to_numpy().sum())
    selectable = int((enriched.column("arm").to_numpy() >= 0).sum())  # train rows not excluded, nor reserved
    budget = cfg.budget_for(selectable)
    log(f"selection: {selectable} selectable rows" + (f" ({excluded} with IFD > 1 excluded)" if excluded else "")
        + f", budget {budget} unique samples, {cfg.selection.num_arms} arms, gamma {cfg.selection.gamma}, b {cfg.selection.smoothing}")

    params = SelectionParams.from_config(cfg, budget)
    config_key = _resume_or_reset(cfg, storage)
    service = start_service(str(prepared.enriched), params, storage.uri("ray", "selection"), run=cfg.run.run_name)
    callbacks = [*(callbacks or []), *([TrackingCallback(tracking)] if tracking else [])]
    trainer = build_trainer(cfg, service, prepared, eval_ids, storage, callbacks=callbacks)
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
    with result.checkpoint.as_directory() as d:
        if Path(d, STOPPED).exists():
            stopped = json.loads(Path(d, STOPPED).read_text())
            if not stopped.get("trained", True):  # a stop marker and no training: nothing for a rerun to resume
                storage.delete("ray")
            raise RunError(f"training stopped: {stopped['reason']}; nothing was published. "
                           f"{stopped.get('advice', '')}".strip())
    staging = run_dir / ".outputs.partial"  # every output is written here first, then published at once
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    cfg.save(staging / "config.yaml")
    shutil.copyfile(prepared.pool_dir / "quarantine.parquet", staging / "quarantine.parquet")
    with result.checkpoint.as_directory() as d:  # the final checkpoint (downloaded first from cloud storage)
        final = json.loads(Path(d, "final.json").read_text())
        for name in ("model", "merged"):
            if Path(d, name).exists():
                shutil.copytree(Path(d, name), staging / name)
        # the final state; the run ended when next_round answered None, which the replay redoes (and so sets why)
        ray.get(service.restore.remote(final["selection_rounds"], (None,)))
        history = read_history(Path(d))
    selection, selections = ray.get([service.summary.remote(), service.selections.remote()])
    ray.kill(service)
    out = write_run_files(staging, selection, selections, history, final, run_dir=cfg.run_uri,
                          ifd_excluded=excluded, wall_seconds=time.time() - t_start, config_key=config_key)
    publish_outputs(staging, run_dir)
    if storage.remote:
        t0 = time.time()
        published = [name for name in OUTPUTS if (run_dir / name).exists()]
        for name in published:  # summary.json, what marks a finished run, is the last of OUTPUTS
            storage.upload(run_dir / name, name)
        for name in set(OUTPUTS) - set(published):
            storage.delete(name)
        log(f"storage: outputs in {storage.uri()} ({time.time() - t0:.1f}s)")
    storage.write_text(json.dumps({"config_key": config_key}), "ray", FINISHED)  # these checkpoints are done
    return out


def _resume_or_reset(cfg: LeadConfig, storage: RunStorage) -> str:
    """A rerun of an interrupted run resumes from its last round checkpoint (Ray Train finds it by storage path
    and name) when its result keys are the same: operational keys (`OPERATIONAL`: logging, evaluation batch size,
    where Ray runs) never reset a run. If a result key changed, the rerun is refused with one line naming the keys,
    unless `overwrite_output_dir` is set; checkpoints are deleted only then, or once their run has finished and
    published its outputs (which stay until the new run publishes its own). Returns the result keys' hash."""
    key = stage_key(result_values(cfg))
    if storage.exists("ray") and not storage.exists("ray", "config_key.json"):
        raise RunError(f"{storage.uri('ray')} was not made by lead-ray (no config_key.json); move it away or "
                       "choose another run_name")
    if storage.exists("ray", FINISHED):  # the checkpoints of a run that published its outputs
        log("train: previous run finished; training afresh")
        storage.delete("ray")
    elif storage.exists("ray"):
        saved = storage.read_text("ray", "config.yaml") if storage.exists("ray", "config.yaml") else ""
        changed = result_changes(yaml.safe_load(saved) or {}, cfg)
        if changed and not cfg.run.overwrite_output_dir:
            raise RunError(f"{storage.uri()} holds an interrupted run with other values of {', '.join(changed)}; "
                           "rerun with its values to resume it (its config: ray/config.yaml), choose another "
                           "run_name, or set overwrite_output_dir=true to delete its checkpoints")
        if changed:
            log(f"train: overwrite_output_dir: deleting the interrupted run's checkpoints ({', '.join(changed)} "
                "changed)")
            storage.delete("ray")
        else:
            log("train: resuming the interrupted run from its last round checkpoint")
    storage.write_text(json.dumps({"key": key}), "ray", "config_key.json")
    storage.write_text(cfg.to_yaml(), "ray", "config.yaml")  # the run in progress; <run>/config.yaml comes with the outputs
    return key
