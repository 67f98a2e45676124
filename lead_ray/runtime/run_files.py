"""The record of a finished run: `summary.json`, `metrics.jsonl`, `bandit.jsonl` and `selections.parquet`.

One schema, written once (train/fit.py) and read by the report, the CLI and the benches, so readers trust it: a
field this module writes is always there.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

RUN_FILES = ("summary.json", "metrics.jsonl", "bandit.jsonl", "selections.parquet")


@dataclass(kw_only=True)
class RoundMetrics:
    """What training reports for one round (rank 0 keeps them in every checkpoint; metrics.jsonl joins them with
    the selection's round stats). Typed, so a renamed field fails where it is built or read, in unit tests too."""

    round: int
    train_loss: float  # mean NLL over the round's target tokens, all workers
    num_samples: int  # rows trained this round (all workers)
    num_tokens: int
    round_seconds: float
    step: int  # optimizer steps so far
    eval_nll: float | None = None  # held-out NLL after the round (eval_every_round)
    learning_rate: float  # the mean over the round's steps
    selection_seconds: float = 0.0  # cumulative, up to this round's plan

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if not (k == "eval_nll" and v is None)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RoundMetrics:
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


@dataclass
class RunFiles:
    summary: dict[str, Any]  # the run's headline figures (keys: see write_run_files)
    rounds: list[dict[str, Any]]  # per round, in order: the selection's round stats joined with training metrics
    final: dict[str, Any]  # nll_before, nll_after, selection_seconds
    bandit: list[dict[str, Any]]  # per round: round, arm_probs (the distribution drawn from), arms (per-arm stats)
    selections: pa.Table  # every trained (round, id): arm, group, idu_before, idu_after, loss


def write_run_files(folder: Path, selection: dict[str, Any], selections: dict[str, np.ndarray],
                    training: list[RoundMetrics], final: dict[str, Any], **context: Any) -> dict[str, Any]:
    """Write the four files into `folder`; returns the summary.

    `selection` is the SelectionService's summary, `selections` its (round, id) log, `training` the workers'
    per-round metrics, `final` the last checkpoint's figures and `context` the run's own (run_dir, ifd_excluded,
    wall_seconds, config_key).
    """
    pq.write_table(pa.table({k: np.asarray(v) for k, v in selections.items()}), folder / "selections.parquet")
    by_round = {m.round: m.to_dict() for m in training}
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
