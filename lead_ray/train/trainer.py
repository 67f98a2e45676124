"""The Ray Train TorchTrainer that runs LEAD's whole training as one fit()."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from lead_ray.config import LeadConfig
from lead_ray.train.loop import train_loop_per_worker


def build_trainer(cfg: LeadConfig, service, model_path: str, pool_dir: Path, eval_ids: np.ndarray,
                  callbacks: list | None = None) -> TorchTrainer:
    import ray

    # each worker fetches only the held-out ids it evaluates, not the whole list
    eval_ids = eval_ids[: cfg.eval_max_samples]
    eval_shards = [ray.put(eval_ids[rank :: cfg.num_workers]) for rank in range(cfg.num_workers)]
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg.to_dict(), "service": service, "model_path": model_path,
                           "pool_dir": str(pool_dir), "eval_shards": eval_shards},
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": 1, **({"GPU": 1} if cfg.use_gpu else {})}),
        run_config=RunConfig(name="train", storage_path=str(cfg.run_dir / "ray"),
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             failure_config=FailureConfig(max_failures=cfg.max_failures),
                             callbacks=callbacks or None,
                             logging_config=LoggingConfig(log_level="INFO" if cfg.verbose else "WARNING")),
    )
