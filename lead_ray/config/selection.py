"""How LEAD selects (owned by `lead_ray.select`): the bandit over arms, the utility, the round's quota, the budget.

Names follow the LEAD paper (arXiv 2505.07437); README "The LEAD signal" and `lead_ray/select/*.py` give the
formulas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lead_ray.config.fields import arg

SELECTORS = ("lead", "random", "full", "longest", "static_iu", "static_ifd", "iterative_rescore")  # lead_ray/select
# the LEAD paper's selection settings as lead-ray first implemented them (the defaults until stop 34, when
# `quota: proportional`, `truncate_top: 0.5` and `arm_by: ifd_in_group` beat random on the untuned test pool):
# `preset: paper` puts them under whatever keys a config sets itself (README "Selection quality" measures both)
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"quota": "floor", "arm_allocation": "sample", "arms_per_round": 1, "truncate_top": 0.0,
              "demote_after": 0, "ifd_max": None, "group_budget": "none", "smoothing": 0.1, "sample_rate": 0.015,
              "utility": "lead", "arm_by": "ifd"},
}


@dataclass(frozen=True)
class SelectionArgs:
    preset: str | None = arg(None, "`paper`: the paper's selection settings (`quota: floor`, `truncate_top: 0`, "
                             "`arm_by: ifd`, `arm_allocation: sample`, `smoothing: 0.1`, no demotion or IFD "
                             "threshold) under whatever keys the config sets itself", choices=tuple(PRESETS))
    selector: str = arg("lead", "`lead`, or a baseline with the same recipe and unique-sample budget: `random`, "
                        "`full`, `longest`, `static_iu`, `static_ifd` (top-`budget` by the score once, trained "
                        "`max_uses` epochs), or `iterative_rescore` (before every round the workers score every "
                        "eligible row with the current model; the round takes the highest-NLL rows)",
                        choices=SELECTORS)
    num_arms: int = arg(7, "arms K, made by `arm_by`", ge=1)
    gamma: float = arg(0.1, "EXP3 exploration γ", gt=0.0, le=1.0)
    bandit_lr: float | None = arg(None, "EXP3 step η in w_k ← w_k·exp(η·R̂/p_k); null is the paper's γ/K (≈ 0.014 "
                                  "for K = 7), which barely moves the arm probabilities in 20 rounds", gt=0.0)
    utility: str = arg("lead", "`lead`: IDU from the training loss (the paper). `learnable`: the loss minus the "
                       "reference model's loss (`ref_loss`, the warm-up model; the base model with `ifd_model: "
                       "base`), RHO-LOSS's reducible loss", choices=("lead", "learnable"))
    smoothing: float = arg(0.1, "b in IDU ← (1-b)·IDU + b·(L_t + ΔL′): the weight on the new observation",
                           gt=0.0, le=1.0)
    sample_rate: float = arg(0.015, "r: per round, the top ⌊r·cell⌋ rows of each (arm, group) cell (see `quota`)",
                             gt=0.0, le=1.0)
    max_uses: int = arg(4, "a sample is trained at most this many times", ge=1)
    budget: float = arg(0.025, "B, unique samples: a fraction (≤ 1) of the selectable pool, or a whole count", gt=0.0)
    max_rounds: int = arg(20, "rounds at most", ge=1)
    arms_per_round: int = arg(1, "arms drawn per round (≤ `num_arms`)", ge=1)
    arm_reference: str = arg("last", "ḡ_{t_k}, u_{t_k} from the round the arm was `last` or `first` picked",
                             choices=("last", "first"))
    use_correction: bool = arg(True, "ablation: false drops ΔL′ from the utility")
    uniform_arms: bool = arg(False, "ablation: uniform arm choice instead of EXP3")
    reuse_after_budget: bool = arg(False, "false: stop when B unique samples were trained (the paper). true: then "
                                   "keep training the chosen rows until each was used `max_uses` times")
    quota: str = arg("proportional", "rows per round from each (arm, group) cell: `floor` = max(1, ⌊r·cell size⌋); "
                     "`proportional` = ⌊r·eligible rows of the arm⌋ (≥ 1), split over its groups by eligible rows "
                     "(largest remainder)", choices=("floor", "proportional"))
    arm_allocation: str = arg("sample", "`sample`: EXP3 draws `arms_per_round` arms; `proportional` (needs `quota: "
                              "proportional`): every arm each round, with a share p_k of the round's rows",
                              choices=("sample", "proportional"))
    truncate_top: float = arg(0.5, "loss truncation: skip this top share of each cell's eligible rows by IDU "
                              "(the top of a cell by loss is mostly noise)",
                              ge=0.0, lt=1.0)
    demote_after: int = arg(0, "m ≥ 2: a row whose loss at its m-th use is not below its first is never selected "
                            "again, and its budget is refunded (0: off)", ge=0)
    group_budget: str = arg("none", "`proportional`: each task group may take at most its share of the unique "
                            "budget (largest remainder), so a bandit that favours one arm cannot skew the pool's task "
                            "mix", choices=("none", "proportional"))
    ifd_max: float | None = arg(None, "rows with IFD above this are never selected (null: no threshold)", gt=0.0)
