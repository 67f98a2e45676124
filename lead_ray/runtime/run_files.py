"""The record of a finished run: `summary.json`, `metrics.jsonl`, `bandit.jsonl` and `selections.parquet`.

One schema, written once (train/fit.py) and read by the report, the CLI and the benches, so readers trust it: a
field this module writes is always there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

RUN_FILES = ("summary.json", "metrics.jsonl", "bandit.jsonl", "selections.parquet")


@dataclass
class RunFiles:
    summary: dict[str, Any]  # the run's headline figures (keys: see write_run_files)
    rounds: list[dict[str, Any]]  # per round, in order: the selection's round stats joined with training metrics
    final: dict[str, Any]  # nll_before, nll_after, selection_seconds
    bandit: list[dict[str, Any]]  # per round: round, arm_probs (the distribution drawn from), arms (per-arm stats)
    selections: pa.Table  # every trained (round, id): arm, group, idu_before, idu_after, loss


def write_run_files(folder: Path, selection: dict[str, Any], selections: dict[str, np.ndarray],
                    training: list[dict[str, Any]], final: dict[str, Any], **context: Any) -> dict[str, Any]:
    """Write the four files into `folder`; returns the summary.

    `selection` is the SelectionService's summary, `selections` its (round, id) log, `training` the workers'
    per-round metrics, `final` the last checkpoint's figures and `context` the run's own (run_dir, ifd_excluded,
    wall_seconds, config_key).
    """
    pq.write_table(pa.table({k: np.asarray(v) for k, v in selections.items()}), folder / "selections.parquet")
    by_round = {m["round"]: m for m in training}
    with open(folder / "metrics.jsonl", "w") as f:
        for s in selection["round_stats"]:
            stats = {k: v for k, v in s.items() if k not in ("arms", "arm_probs")}
            f.write(json.dumps({**stats, **by_round.get(s["round"], {})}) + "\n")
        f.write(json.dumps({"final": True, **final}) + "\n")
    with open(folder / "bandit.jsonl", "w") as f:
        for s in selection["round_stats"]:
            f.write(json.dumps({"round": s["round"], "arm_probs": s["arm_probs"], "arms": s["arms"]}) + "\n")
    summary = {"rounds": selection["rounds"], "num_unique": selection["num_unique"], "budget": selection["budget"],
               "stop_reason": selection["stop_reason"],
               "arms_per_round": [[a["arm"] for a in s["arms"]] for s in selection["round_stats"]],
               "nll_before": final["nll_before"], "nll_after": final["nll_after"],
               "selection_seconds": final["selection_seconds"], **context}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def read_run_files(folder: Path) -> RunFiles:
    """Read a finished run's record; a missing file raises FileNotFoundError naming it."""
    if not folder.is_dir():
        raise FileNotFoundError(f"run dir not found: {folder}")
    missing = [name for name in RUN_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a finished run dir: missing {', '.join(missing)}")
    *rounds, final = _jsonl(folder / "metrics.jsonl")
    return RunFiles(json.loads((folder / "summary.json").read_text(encoding="utf-8")), rounds, final,
                    _jsonl(folder / "bandit.jsonl"), pq.read_table(folder / "selections.parquet"))
