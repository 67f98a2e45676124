"""Ray Tune sweeps over the other keys (owned by `lead_ray.sweep`)."""

from __future__ import annotations

from dataclasses import dataclass

from lead_ray.config.fields import arg


def _default_space() -> dict[str, list]:
    return {"smoothing": ["loguniform", 0.01, 1.0], "gamma": ["uniform", 0.01, 0.5],
            "bandit_lr": ["loguniform", 0.005, 0.2]}


@dataclass(frozen=True)
class TuneArgs:
    tune_space: dict[str, list] = arg(help="the keys a sweep varies; each `[uniform|loguniform, low, high]` or "
                                      "`[choice, v1, v2, ...]`", factory=_default_space, operational=True,
                                      doc_default="smoothing, gamma, bandit_lr")
    tune_num_samples: int = arg(8, "trials", ge=1, le=1_000_000, operational=True)
    tune_searcher: str = arg("random", "`random`, `grid` or `optuna`", choices=("random", "grid", "optuna"),
                             operational=True)
    tune_grid_points: int = arg(3, "values per range when `tune_searcher` is grid", ge=2, le=1000, operational=True)
    tune_max_concurrent_trials: int | None = arg(None, "null: as many as the cluster's resources allow", ge=1,
                                                 operational=True)
    tune_grace_period: int = arg(2, "ASHA: rounds before a trial may be stopped", ge=1, operational=True)
