"""Each round's figures in the user's tracking tool (report_to), logged the Ray Train way: rank 0 reports them with
its round checkpoint, and a callback on the Train controller (the driver's node) writes them. Tune's logger
callbacks see the same reported figures for every trial."""

from __future__ import annotations

from typing import Any

from ray.train import UserCallback

from lead_ray.runtime.tracking import Tracker, Tracking, report_scalars


def selection_scalars(stats: dict[str, Any]) -> dict[str, float]:
    """A round's selection figures, flat: the arm probabilities, each chosen arm's raw and scaled reward, ΔL′ and
    β*, unique samples and the budget used."""
    out = {f"arm_prob/{k}": p for k, p in enumerate(stats["arm_probs"])}
    for arm in stats["arms"]:
        k = arm["arm"]
        out |= {f"reward/{k}": arm["reward"], f"delta_l/{k}": arm["delta_l"], f"beta/{k}": arm["beta"]}
        if "scaled_reward" in arm:
            out[f"scaled_reward/{k}"] = arm["scaled_reward"]
    if len(stats["arms"]) == 1:
        out["chosen_arm"] = stats["arms"][0]["arm"]
    return out | {"num_unique": stats["num_unique"], "budget_used": stats["num_unique"] / max(stats["budget"], 1),
                  "loss_change": stats["loss_change"]}


class TrackingCallback(UserCallback):
    """Logs rank 0's report at its optimizer step. Opened in the controller on the first report; the driver opened
    the runs (`start_tracking`) and closes them after the report."""

    def __init__(self, tracking: Tracking) -> None:
        self.tracking = tracking
        self.tracker: Tracker | None = None

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        self.tracker = self.tracker or Tracker(self.tracking)
        self.tracker.log_metrics(report_scalars(metrics[0]), step=int(metrics[0]["step"]))
        if metrics[0].get("final"):  # the controller ends with the fit: write out what is queued
            self.tracker.close()
            self.tracker = None
