"""Selector state ↔ files (NumPy .npz without pickle + JSON), so checkpoints never unpickle anything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lead_ray.select.rounds import LOG_COLUMNS


def save_state(state: dict[str, Any], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"idu": state["idu"], "uses": state["uses"]}
    directions = {"prev": state["prev"], **{f"arm_{k}": v for k, v in state["arm_round"].items()}}
    for name, d in directions.items():
        if d is not None:
            arrays[f"{name}_grad"], arrays[f"{name}_step"] = d["grad"], d["step"]
    for col in LOG_COLUMNS:
        parts = [entry[col] for entry in state["log"]]
        arrays[f"log_{col}"] = np.concatenate(parts) if parts else np.zeros(0)
    plan = state.get("plan")
    if plan is not None:
        for key in ("arms", "ids", "arm_probs", "losses"):
            arrays[f"plan_{key}"] = plan[key]
    np.savez(folder / "selector.npz", **arrays)
    meta = {"plan_round": None if plan is None else plan["round"], "round": state["round"], "bandit": state["bandit"], "round_stats": state["round_stats"],
            "stop_reason": state["stop_reason"], "arm_round_keys": sorted(state["arm_round"])}
    (folder / "selector.json").write_text(json.dumps(meta))


def load_state(folder: Path) -> dict[str, Any]:
    meta = json.loads((folder / "selector.json").read_text())
    with np.load(folder / "selector.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}

    def direction(name: str) -> dict[str, np.ndarray] | None:
        return {"grad": arrays[f"{name}_grad"], "step": arrays[f"{name}_step"]} if f"{name}_grad" in arrays else None

    rounds = arrays["log_round"].astype(np.int64)
    log = []
    for r in np.unique(rounds):
        sel = rounds == r
        log.append({col: arrays[f"log_{col}"][sel] for col in LOG_COLUMNS})
    return {"idu": arrays["idu"], "uses": arrays["uses"], "round": meta["round"],
            "prev": direction("prev"), "arm_round": {k: direction(f"arm_{k}") for k in meta["arm_round_keys"]},
            "bandit": meta["bandit"], "log": log, "round_stats": meta["round_stats"],
            "stop_reason": meta["stop_reason"],
            "plan": None if meta.get("plan_round") is None else {
                "round": meta["plan_round"], **{k: arrays[f"plan_{k}"] for k in ("arms", "ids", "arm_probs", "losses")}}}
