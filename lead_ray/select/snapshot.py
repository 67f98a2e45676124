"""Selector state ↔ files (NumPy .npz without pickle + JSON), so checkpoints never unpickle anything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lead_ray.select.selector import LOG_COLUMNS


def save_state(state: dict[str, Any], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"idu": state["idu"], "uses": state["uses"]}
    if state["g_prev"] is not None:
        arrays["g_prev"] = state["g_prev"]
    for k, v in state["g_arm"].items():
        arrays[f"g_arm_{k}"] = v
    for col in LOG_COLUMNS:
        parts = [entry[col] for entry in state["log"]]
        arrays[f"log_{col}"] = np.concatenate(parts) if parts else np.zeros(0)
    plan = state.get("plan")
    if plan is not None:
        for key in ("arms", "ids", "arm_probs", "losses"):
            arrays[f"plan_{key}"] = plan[key]
    np.savez(folder / "selector.npz", **arrays)
    meta = {"plan_round": None if plan is None else plan["round"], "round": state["round"], "bandit": state["bandit"], "round_stats": state["round_stats"],
            "stop_reason": state["stop_reason"], "g_arm_keys": sorted(state["g_arm"])}
    (folder / "selector.json").write_text(json.dumps(meta))


def load_state(folder: Path) -> dict[str, Any]:
    meta = json.loads((folder / "selector.json").read_text())
    with np.load(folder / "selector.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    rounds = arrays["log_round"].astype(np.int64)
    log = []
    for r in np.unique(rounds):
        sel = rounds == r
        log.append({col: arrays[f"log_{col}"][sel] for col in LOG_COLUMNS})
    return {"idu": arrays["idu"], "uses": arrays["uses"], "round": meta["round"],
            "g_prev": arrays.get("g_prev"), "g_arm": {k: arrays[f"g_arm_{k}"] for k in meta["g_arm_keys"]},
            "bandit": meta["bandit"], "log": log, "round_stats": meta["round_stats"],
            "stop_reason": meta["stop_reason"],
            "plan": None if meta.get("plan_round") is None else {
                "round": meta["plan_round"], **{k: arrays[f"plan_{k}"] for k in ("arms", "ids", "arm_probs", "losses")}}}
