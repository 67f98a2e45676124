"""The selection parameters every strategy takes, typed, with LeadConfig's defaults: built from a config here only."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from lead_ray.config import LeadConfig


@dataclass(frozen=True)
class SelectionParams:
    budget: int  # unique samples (the config's fraction is resolved against the selectable pool by the caller)
    selector: str = LeadConfig.selector
    utility: str = LeadConfig.utility
    num_arms: int = LeadConfig.num_arms
    gamma: float = LeadConfig.gamma
    bandit_lr: float | None = LeadConfig.bandit_lr
    smoothing: float = LeadConfig.smoothing
    sample_rate: float = LeadConfig.sample_rate
    max_uses: int = LeadConfig.max_uses
    max_rounds: int = LeadConfig.max_rounds
    arms_per_round: int = LeadConfig.arms_per_round
    arm_reference: str = LeadConfig.arm_reference
    uniform_arms: bool = LeadConfig.uniform_arms
    use_correction: bool = LeadConfig.use_correction
    reuse_after_budget: bool = LeadConfig.reuse_after_budget
    quota: str = LeadConfig.quota
    arm_allocation: str = LeadConfig.arm_allocation
    truncate_top: float = LeadConfig.truncate_top
    demote_after: int = LeadConfig.demote_after
    group_budget: str = LeadConfig.group_budget
    ifd_max: float | None = LeadConfig.ifd_max
    seed: int = LeadConfig.seed
    round_size: int | None = None  # static and iterative_rescore: rows per round (None: as large as LEAD's)

    @classmethod
    def from_config(cls, cfg: LeadConfig, budget: int) -> SelectionParams:
        return cls(budget=budget, **{f.name: getattr(cfg, f.name) for f in fields(cls)
                                     if f.name not in ("budget", "round_size")})

    def to_dict(self) -> dict:
        return asdict(self)
