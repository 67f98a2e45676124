"""The SelectionService's live figures as Ray metrics (Prometheus, via Ray's metrics agent): they show on the Ray
dashboard's metrics page and in any Prometheus that scrapes the cluster. Every series carries the run's name."""

from __future__ import annotations

import numpy as np
from ray.util.metrics import Counter, Gauge, Histogram

# seconds the actor spends on one `report` call; most are well under a millisecond
REPORT_SECONDS_BOUNDARIES = [1e-4, 1e-3, 1e-2, 0.1, 1.0]


class ServiceMetrics:
    def __init__(self, run: str):
        tags = {"run": run}
        self.arm_probability = Gauge("lead_ray_arm_probability", "The bandit's probability of each arm",
                                     tag_keys=("run", "arm")).set_default_tags(tags)
        self.round = Gauge("lead_ray_round", "Rounds finished", tag_keys=("run",)).set_default_tags(tags)
        self.unique = Gauge("lead_ray_unique_samples", "Unique samples selected so far",
                            tag_keys=("run",)).set_default_tags(tags)
        self.reports = Counter("lead_ray_reports", "Loss reports received from the training workers",
                               tag_keys=("run",)).set_default_tags(tags)
        self.report_seconds = Histogram("lead_ray_report_seconds", "Time the service spends on one loss report",
                                        boundaries=REPORT_SECONDS_BOUNDARIES, tag_keys=("run",)).set_default_tags(tags)
        self.persist_seconds = Gauge("lead_ray_persist_seconds", "Time the last round's journal write took",
                                     tag_keys=("run",)).set_default_tags(tags)
        self.persist_bytes = Counter("lead_ray_persist_bytes", "Selection state bytes written to the journal",
                                     tag_keys=("run",)).set_default_tags(tags)

    def state(self, rounds: int, unique: int, arm_probs: np.ndarray) -> None:
        self.round.set(rounds)
        self.unique.set(unique)
        for arm, p in enumerate(arm_probs):
            self.arm_probability.set(float(p), tags={"arm": str(arm)})

    def report(self, seconds: float) -> None:
        self.reports.inc()
        self.report_seconds.observe(seconds)

    def persist(self, seconds: float, written: int) -> None:
        self.persist_seconds.set(seconds)
        self.persist_bytes.inc(written)
