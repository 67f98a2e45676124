"""Experiment tracking, as HF's `report_to`: TensorBoard, MLflow and W&B.

A run's tracking is opened once on the driver (`start_tracking`: the MLflow run, the W&B id, the config as
parameters) and described by a small picklable `Tracking`; the Ray Train controller (on the driver's node) logs each
round's scalars through it, and the driver logs the report as artifacts at the end. Where the backends write:
`logging_dir` (TensorBoard events, `mlflow.db` and `mlartifacts/` unless MLFLOW_TRACKING_URI says otherwise, and
W&B's `wandb/` folder; W&B's mode and project come from its usual variables: WANDB_MODE, WANDB_PROJECT).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lead_ray.config import TRACKERS, ConfigError, LeadConfig

MODULES = dict(zip(TRACKERS, ("tensorboardX", "mlflow", "wandb")))  # what each report_to backend imports
EXPERIMENT = "lead-ray"  # MLflow experiment and W&B project, unless MLFLOW_EXPERIMENT_NAME / WANDB_PROJECT say


@dataclass(frozen=True)
class Tracking:
    """Where a run's scalars go: picklable, so the Ray Train controller can open the same runs."""

    backends: tuple[str, ...]
    logging_dir: str
    run_name: str
    mlflow_uri: str = ""
    mlflow_run_id: str = ""
    wandb_id: str = ""
    wandb_project: str = EXPERIMENT
    wandb_mode: str | None = None  # the driver's WANDB_MODE: Ray workers do not see variables set after Ray started


def start_tracking(cfg: LeadConfig, mlflow_dir: Path | None = None) -> Tracking | None:
    """Open the run in every `report_to` backend and log the resolved config as its parameters; None for none.
    `mlflow_dir`: where MLflow's store is when MLFLOW_TRACKING_URI is unset (default: logging_dir), so a sweep's
    trials share one."""
    backends = tuple(b for b in cfg.tracking.report_to if b != "none")
    if not backends:
        return None
    missing = [b for b in backends if importlib.util.find_spec(MODULES[b]) is None]
    if missing:
        raise ConfigError(f"config key 'report_to': {', '.join(missing)} not installed; pip install "
                          "'lead-ray[tracking]' (tensorboardX, mlflow-skinny, wandb)")
    logging_dir = cfg.logging_path
    logging_dir.mkdir(parents=True, exist_ok=True)
    tracking = Tracking(backends, str(logging_dir), cfg.run.run_name)
    if "mlflow" in backends:
        from mlflow.tracking import MlflowClient

        store = mlflow_dir or logging_dir
        store.mkdir(parents=True, exist_ok=True)
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{store / 'mlflow.db'}"
        client = MlflowClient(uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
        experiment = client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(
            name, artifact_location=None if "MLFLOW_TRACKING_URI" in os.environ else
            (store / "mlartifacts").as_uri())
        run = client.create_run(experiment_id, run_name=cfg.run.run_name)
        tracking = dataclasses.replace(tracking, mlflow_uri=uri, mlflow_run_id=run.info.run_id)
    if "wandb" in backends:
        tracking = dataclasses.replace(tracking, wandb_id=uuid.uuid4().hex[:12],
                                       wandb_project=os.environ.get("WANDB_PROJECT", EXPERIMENT),
                                       wandb_mode=os.environ.get("WANDB_MODE"))
    tracker = Tracker(tracking)
    tracker.log_params(cfg.to_dict())
    tracker.close()
    return tracking


def report_scalars(report: dict[str, Any], skip: tuple[str, ...] = ()) -> dict[str, float]:
    """The figures of one `ray.train.report` (or the Tune result made from it) that are logged: its numbers, less
    the step they are logged at, the final-report flag and `skip`."""
    return {k: v for k, v in report.items() if isinstance(v, int | float) and not isinstance(v, bool)
            and k not in ("step", "final", *skip)}


class Tracker:
    """The open backends of one `Tracking`, in this process."""

    def __init__(self, tracking: Tracking) -> None:
        self.tracking = tracking
        self.writer = self.mlflow = self.wandb = None
        if "tensorboard" in tracking.backends:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(tracking.logging_dir, flush_secs=5)
        if "mlflow" in tracking.backends:
            from mlflow.tracking import MlflowClient

            self.mlflow = MlflowClient(tracking.mlflow_uri)
        if "wandb" in tracking.backends:
            import wandb

            self.wandb = wandb.init(project=tracking.wandb_project, name=tracking.run_name, id=tracking.wandb_id,
                                    resume="allow", dir=tracking.logging_dir, mode=tracking.wandb_mode)

    def log_params(self, params: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.add_text("config", "\n".join(f"    {k}: {json.dumps(v)}" for k, v in params.items()))
        if self.mlflow is not None:
            for k, v in params.items():
                self.mlflow.log_param(self.tracking.mlflow_run_id, k, json.dumps(v)[:6000])
        if self.wandb is not None:
            self.wandb.config.update(params, allow_val_change=True)

    def log_metrics(self, scalars: dict[str, float], step: int) -> None:
        scalars = {k: float(v) for k, v in scalars.items() if math.isfinite(float(v))}
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, step)
            self.writer.flush()
        if self.mlflow is not None:
            from mlflow.entities import Metric

            at = int(1000 * time.time())
            self.mlflow.log_batch(self.tracking.mlflow_run_id,
                                  metrics=[Metric(k, v, at, step) for k, v in scalars.items()])
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def log_artifacts(self, paths: list[Path]) -> None:
        """The report: PNGs as images (TensorBoard, W&B) and every file as an artifact (MLflow, W&B)."""
        for path in paths:
            if self.writer is not None:
                if path.suffix == ".png":
                    import matplotlib.image

                    self.writer.add_image(f"report/{path.stem}", matplotlib.image.imread(path)[..., :3],
                                          dataformats="HWC")
                else:
                    self.writer.add_text(f"report/{path.name}", path.read_text())
            if self.mlflow is not None:
                self.mlflow.log_artifact(self.tracking.mlflow_run_id, str(path), "report")
            if self.wandb is not None:
                self.wandb.save(str(path), base_path=str(path.parent), policy="now")

    def close(self, finished: bool = False) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.mlflow is not None and finished:
            self.mlflow.set_terminated(self.tracking.mlflow_run_id)
        if self.wandb is not None:
            self.wandb.finish()
