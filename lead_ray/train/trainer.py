"""The Ray Train TorchTrainer that runs LEAD's whole training as one fit()."""

from __future__ import annotations

import numpy as np
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from lead_ray.config import LeadConfig
from lead_ray.data.prepared import PreparedPool
from lead_ray.runtime.storage import RunStorage
from lead_ray.train.collective import process_group_backend
from lead_ray.train.loop import WorkerConfig, train_loop_per_worker


def build_trainer(cfg: LeadConfig, service, prepared: PreparedPool, eval_ids: np.ndarray, storage: RunStorage,
                  callbacks: list | None = None) -> TorchTrainer:
    """Checkpoints go to `storage` (a bucket with cloud storage); workers stage the pool and model from there."""
    import ray

    # each worker fetches only the held-out ids it evaluates, not the whole list
    eval_ids = eval_ids[: cfg.training.eval_max_samples]
    eval_shards = [ray.put(eval_ids[rank :: cfg.training.num_workers]) for rank in range(cfg.training.num_workers)]
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": WorkerConfig.of(cfg), "service": service, "sources": prepared.sources,
                           "eval_shards": eval_shards},
        torch_config=TorchConfig(backend=process_group_backend(cfg.training.use_gpu)),
        scaling_config=ScalingConfig(num_workers=cfg.training.num_workers, use_gpu=cfg.training.use_gpu,
                                     resources_per_worker={"CPU": 1, **({"GPU": 1} if cfg.training.use_gpu else {})}),
        run_config=RunConfig(name="train", storage_path=storage.path("ray"),
                             storage_filesystem=storage.fs if storage.remote else None,
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             failure_config=FailureConfig(max_failures=cfg.training.max_failures),
                             callbacks=callbacks or None,
                             logging_config=LoggingConfig(log_level="INFO" if cfg.tracking.verbose else "WARNING")),
    )
