"""The selection parameters every strategy takes: the config's selection section, with the budget resolved to a
count of unique samples, the run's seed, and the static strategies' round size."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lead_ray.config import LeadConfig, RunArgs, SelectionArgs, section_values


@dataclass(frozen=True)
class SelectionParams(SelectionArgs):
    budget: int = 1  # unique samples (the config's fraction is resolved against the selectable pool by the caller)
    seed: int = RunArgs.seed
    round_size: int | None = None  # static and iterative_rescore: rows per round (None: as large as LEAD's)

    @classmethod
    def from_config(cls, cfg: LeadConfig, budget: int) -> SelectionParams:
        return cls(**{**section_values(cfg.selection, results_only=False), "budget": budget}, seed=cfg.run.seed)

    def to_dict(self) -> dict:
        return asdict(self)
