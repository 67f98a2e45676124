"""Optional bridge to EleutherAI's lm-evaluation-harness: standard benchmarks (or local YAML tasks) on a run's model.

Why: held-out NLL and exact match say how well the model fits the pool's own task mix; a harness task says how it
does on a benchmark others report. The model is loaded exactly as `lead-ray eval` loads it (`load_eval_model`: a
LoRA adapter on the run's base model, or a full/merged folder), then handed to the harness as an object, so the
harness never resolves names on the Hub and remote code stays off. `lm_eval` is an optional extra
(`pip install 'lead-ray[lm-eval]'`), imported only here and only when asked for. Whether a task's data loads
offline is up to the task: a local `dataset_path: json` task does; a Hub benchmark needs its data in the HF cache.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lead_ray.eval.model import EvalError, load_eval_model
from lead_ray.runtime.console import aligned

if TYPE_CHECKING:
    from lead_ray.config import LeadConfig

LM_EVAL_FILE = "lm_eval.json"
LM_EVAL_MISSING = "lm-evaluation-harness is not installed: pip install 'lead-ray[lm-eval]' (or bash scripts/setup.sh lm-eval)"


def check_lm_eval(tasks: list[str] | None = None, include_path: str | Path | None = None) -> None:
    """EvalError naming the extra when lm_eval is not importable (looked up without importing it); with `tasks`,
    also for a task name the harness does not know or a missing `include_path`. `lead-ray eval` calls this before
    it loads any model, so a typo costs seconds, not an evaluation."""
    if importlib.util.find_spec("lm_eval") is None:
        raise EvalError(LM_EVAL_MISSING)
    if tasks is None:
        return
    if not [t for t in tasks if t and t.strip()]:
        raise EvalError("no lm-eval tasks given")
    if include_path is not None and not Path(include_path).expanduser().is_dir():
        raise FileNotFoundError(f"lm-eval task folder {include_path} does not exist")
    manager = _task_manager(str(Path(include_path).expanduser()) if include_path is not None else None)
    unknown = [t.strip() for t in tasks if t.strip() and not manager.match_tasks([t.strip()])]
    if unknown:
        raise EvalError(f"lm-eval does not know task(s) {', '.join(unknown)}"
                        + ("" if include_path else " (local task YAMLs: --lm-eval-include DIR)"))


@functools.lru_cache(maxsize=4)
def _task_manager(include_path: str | None) -> Any:
    """The harness's task index (scanning its ~15k task YAMLs takes seconds): built once per include folder."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path)


def run_lm_eval(model_dir: str | Path, tasks: list[str], cfg: LeadConfig, *, limit: int | float | None = None,
                num_fewshot: int | None = None, include_path: str | Path | None = None, batch_size: int = 8,
                run_dir: str | Path | None = None) -> dict[str, Any]:
    """Run harness `tasks` on the saved model in `model_dir`; write `<run_dir>/lm_eval.json` and return it.

    `run_dir` defaults to `cfg.run_dir`. `include_path` is a folder of task YAMLs (local tasks); `limit` caps the
    documents per task (a fraction if < 1, as the harness reads it). The returned dict holds the harness's
    `results` (per task: metric -> value, e.g. "acc,none"), `n-samples`, `versions`, `n-shot` and `configs`,
    made JSON-safe, plus the model folder, tasks and limit.
    """
    check_lm_eval(tasks, include_path)  # before the model loads
    tasks = [t.strip() for t in tasks if t.strip()]
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    model_dir = Path(model_dir).expanduser()
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model folder {model_dir} does not exist")
    run_dir = Path(run_dir).expanduser() if run_dir is not None else Path(cfg.run_dir)
    task_manager = _task_manager(str(Path(include_path).expanduser()) if include_path is not None else None)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_eval_model(model_dir, cfg, device)
    if hasattr(model, "merge_and_unload"):  # a LoRA adapter: the harness wants a plain transformers model
        model = model.merge_and_unload()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, backend="causal", batch_size=batch_size,
              trust_remote_code=False)
    out = simple_evaluate(model=lm, tasks=tasks, num_fewshot=num_fewshot, limit=limit, task_manager=task_manager,
                          log_samples=False, batch_size=batch_size, confirm_run_unsafe_code=False)
    if out is None:  # only non-zero ranks of a distributed run get None; we run one process
        raise EvalError("lm-eval returned no results")
    result = {key: _json_safe(out.get(key)) for key in ("results", "groups", "n-samples", "versions", "n-shot",
                                                         "higher_is_better", "configs") if key in out}
    result.update(model=str(model_dir), tasks=tasks, limit=limit, num_fewshot=num_fewshot)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LM_EVAL_FILE).write_text(json.dumps(result, indent=2, allow_nan=True))
    return result


def lm_eval_table(result: dict[str, Any]) -> str:
    """One line per task and metric (stderr next to its value), then where the file went."""
    rows = []
    for task, metrics in result.get("results", {}).items():
        n = result.get("n-samples", {}).get(task, {}).get("effective")
        for key, value in metrics.items():
            if key == "alias" or "_stderr" in key or not isinstance(value, (int, float)):
                continue
            metric, _, flt = key.partition(",")
            err = metrics.get(f"{metric}_stderr,{flt}")
            err_text = f" ± {err:.4f}" if isinstance(err, (int, float)) and math.isfinite(err) else ""
            rows.append((f"{task} {metric}", f"{value:.4f}{err_text}" + (f"  ({n} docs)" if n is not None else "")))
    return aligned(rows)


def _json_safe(value: Any) -> Any:
    """Dicts/lists/scalars as JSON can hold them: numpy scalars to Python, anything else (callables, dtypes in
    task configs) to its string."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item"):
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    return str(value)
