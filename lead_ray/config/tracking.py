"""What a run tells people while it runs (owned by `lead_ray.runtime.tracking`): experiment trackers, console."""

from __future__ import annotations

from dataclasses import dataclass

from lead_ray.config.fields import arg

TRACKERS = ("tensorboard", "mlflow", "wandb")  # report_to values besides none (lead_ray/runtime/tracking.py)


@dataclass(frozen=True)
class TrackingArgs:
    report_to: list[str] = arg(help="experiment tracking: `none`, or a list of `tensorboard`, `mlflow`, `wandb` "
                               "(`a,b` on the command line); see \"Watching a run\"", factory=lambda: ["none"],
                               choices=("none", *TRACKERS), operational=True, doc_default="none")
    logging_dir: str | None = arg(None, "a local folder where the `report_to` backends write (null: `<run>/logs`)",
                                  operational=True)
    verbose: bool = arg(False, "also print Ray Train's own INFO lines (every report and checkpoint); they are always "
                        "in Ray's session logs", operational=True)
