"""Evaluate a run's saved model on its held-out (eval-split) rows: response NLL and generation exact match.

Only rows with split == "eval" are used: they are held out by id hash at ingest and no selector ever sees them.
Heavy imports (torch, transformers, peft) happen inside the functions, so the CLI starts quickly.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

from lead_ray.eval.model import EvalError, load_eval_model
from lead_ray.models.vllm_engine import VLLM_MISSING
from lead_ray.runtime.console import aligned, format_value

__all__ = ["EVAL_FILE", "EvalError", "evaluate_run", "load_eval_model", "main_eval"]

EVAL_FILE = "eval.json"
BACKENDS = ("hf", "vllm")  # exact-match generation: Hugging Face `generate`, or vLLM (lead_ray.eval.generate_vllm)


def check_backend(backend: str) -> None:
    """EvalError for an unknown generation backend, or for `vllm` when vLLM is not installed: found before any
    model is loaded (find_spec only looks; importing vLLM takes seconds)."""
    if backend not in BACKENDS:
        raise EvalError(f"unknown generation backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise EvalError(VLLM_MISSING)


def eval_rows(run_dir: Path, max_samples: int | None) -> tuple[pa.Table, list[str]]:
    """The run's eval-split rows in id order, the first `max_samples` (as training's `eval_max_samples` takes
    them): (enriched columns id/source/group, messages JSON by id)."""
    import numpy as np
    import pyarrow.parquet as pq

    enriched_path, pool_path = run_dir / "prep" / "enriched.parquet", run_dir / "pool" / "pool.parquet"
    for p in (enriched_path, pool_path, run_dir / "pool" / "pool.arrow"):
        if not p.is_file():
            raise FileNotFoundError(f"{p} does not exist; is {run_dir} a finished lead-ray run folder?")
    enriched = pq.read_table(enriched_path, columns=["id", "source", "split", "group"]).sort_by("id")
    split = enriched.column("split").to_numpy(zero_copy_only=False)
    enriched = enriched.filter(split == "eval")
    if max_samples is not None:
        enriched = enriched.slice(0, max_samples)
    pool = pq.read_table(pool_path, columns=["id", "messages"])
    pool_ids = pool.column("id").to_numpy()
    order = np.argsort(pool_ids)
    ids = enriched.column("id").to_numpy()
    pos = order[np.searchsorted(pool_ids[order], ids)] if len(ids) else np.zeros(0, np.int64)
    if len(ids) and not (pool_ids[pos] == ids).all():
        raise EvalError(f"{enriched_path} names eval ids that {pool_path} does not hold")
    messages = pool.column("messages").take(pos).to_pylist()
    return enriched, messages


def evaluate_run(run_dir: Path, model_dir: Path | None = None, max_samples: int = 1000,
                 generation_samples: int = 64, max_new_tokens: int = 32, batch_size: int | None = None,
                 backend: str = "hf") -> dict[str, Any]:
    """Held-out NLL (overall, per source, per group) and greedy exact match of a run's model; writes
    `<run_dir>/eval.json` and returns it.

    `model_dir` defaults to `<run_dir>/model` (the LoRA adapter or the full model). The NLL matches the training
    loop's held-out NLL definition (token-weighted; see `lead_ray.eval.nll`); with the same cap on rows it equals
    the run's `nll_after` up to the bf16 autocast training may have used on GPU (applied here the same way).
    `backend` generates the exact-match answers with Hugging Face `generate` ("hf") or vLLM ("vllm", same prompt
    ids and decoding; a LoRA adapter is served merged, see `lead_ray.eval.generate_vllm.servable_folder`); the NLL
    always comes from the HF model.
    """
    import numpy as np
    import torch

    from lead_ray.config import load_config
    from lead_ray.data.store import RowStore
    from lead_ray.eval.generate import exact_match, split_prompt
    from lead_ray.eval.nll import heldout_nll

    check_backend(backend)
    run_dir = Path(run_dir).expanduser()
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir / 'config.yaml'} does not exist; is {run_dir} a lead-ray run folder?")
    cfg = load_config(run_dir / "config.yaml")
    model_dir = Path(model_dir).expanduser() if model_dir is not None else run_dir / "model"
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model folder {model_dir} does not exist")
    enriched, messages = eval_rows(run_dir, max_samples)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    use_bf16 = cfg.training.bf16 if cfg.training.bf16 is not None else (cfg.training.use_gpu and device.type == "cuda")

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(use_bf16))

    model, tokenizer = load_eval_model(model_dir, cfg, device)
    batch_size = batch_size or cfg.training.eval_batch_size
    ids = enriched.column("id").to_numpy()
    sources = np.asarray(enriched.column("source").to_pylist(), dtype=object)
    groups = enriched.column("group").to_numpy()
    nll = heldout_nll(model, RowStore(run_dir / "pool" / "pool.arrow"), ids, {"source": sources, "group": groups},
                      batch_size, tokenizer.pad_token_id, device, autocast)

    gen_rows, gen_sources = [], []
    for k, text in enumerate(messages):
        if len(gen_rows) >= generation_samples:
            break
        pair = split_prompt(json.loads(text))
        if pair is not None:
            gen_rows.append(pair)
            gen_sources.append(str(sources[k]))
    if backend == "hf":
        with autocast():
            em = exact_match(model, tokenizer, gen_rows, batch_size, max_new_tokens)
    else:
        from lead_ray.eval.generate_vllm import exact_match_vllm, servable_folder

        with servable_folder(model_dir, model, tokenizer, run_dir) as folder:
            del model  # the HF model is done: its memory (GPU memory on a GPU) goes to the vLLM engine
            if device.type == "cuda":
                torch.cuda.empty_cache()
            em = exact_match_vllm(folder, tokenizer, gen_rows, max_new_tokens,
                                  trust_remote_code=cfg.model.trust_remote_code)
    em["backend"] = backend
    by_source: dict[str, dict[str, Any]] = {}
    for source, e in zip(gen_sources, em["examples"], strict=True):
        e["source"] = source
        cell = by_source.setdefault(source, {"n": 0, "correct": 0, "correct_number": 0})
        cell["n"] += 1
        cell["correct"] += int(e["correct"])
        cell["correct_number"] += int(e["correct_number"])
    em["by_source"] = {s: {"accuracy": c["correct"] / c["n"], "accuracy_number": c["correct_number"] / c["n"],
                           "n": c["n"]} for s, c in sorted(by_source.items())}
    em["max_new_tokens"] = max_new_tokens

    result = {"run_dir": str(run_dir), "model": str(model_dir), "device": device.type, "bf16": bool(use_bf16),
              "max_samples": max_samples, "nll": nll, "exact_match": em}
    (run_dir / EVAL_FILE).write_text(json.dumps(result, indent=2, default=_json_default, allow_nan=True))
    return result


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def eval_table(result: dict[str, Any]) -> str:
    """A few aligned lines for the terminal: overall numbers, then one line per source."""
    nll, em = result["nll"], result["exact_match"]
    f = format_value

    rows = [("held-out NLL", f"{f(nll['nll'])}  ({nll['n']} rows, {nll['tokens']} tokens)"),
            ("exact match", f"{f(em['accuracy'])}  (last number {f(em['accuracy_number'])}, {em['n']} rows)")]
    for source, cell in nll["by"].get("source", {}).items():
        gen = em["by_source"].get(source)
        gen_text = f"; exact match {f(gen['accuracy'])} of {gen['n']}" if gen else ""
        rows.append((f"  {source}", f"NLL {f(cell['nll'])} ({cell['n']} rows){gen_text}"))
    rows.append(("written to", str(Path(result["run_dir"]) / EVAL_FILE)))
    return aligned(rows)


def main_eval(model: str | None = None, config: str | None = None, run_dir: str | None = None,
              max_samples: int = 1000, generation_samples: int = 64, max_new_tokens: int = 32,
              backend: str = "hf", lm_eval_tasks: list[str] | None = None, lm_eval_include: str | None = None,
              lm_eval_limit: int | None = None) -> int:
    """`lead-ray eval`: evaluate a run (by folder, or by the config that made it) and print a table; a bad path or
    config is one error line on stderr and exit code 2. With `lm_eval_tasks`, lm-evaluation-harness then runs those
    tasks on the same model (`lead_ray.eval.lm_eval_bridge`); a missing backend or harness is found first."""
    from lead_ray.config import ConfigError, load_config
    from lead_ray.models.load import ModelError

    try:
        if run_dir is None and config is None:
            raise EvalError("give the run folder (--run-dir) or the config that made it (--config)")
        if run_dir is not None and config is not None:
            raise EvalError("give either --run-dir or --config, not both")
        folder = Path(run_dir).expanduser() if run_dir is not None else load_config(config).run_dir
        check_backend(backend)
        if not folder.is_dir():
            raise FileNotFoundError(f"run folder {folder} does not exist")
        if lm_eval_tasks:
            from lead_ray.eval.lm_eval_bridge import check_lm_eval

            check_lm_eval(lm_eval_tasks, lm_eval_include)
        model_dir = Path(model).expanduser() if model is not None else None
        result = evaluate_run(folder, model_dir, max_samples=max_samples, generation_samples=generation_samples,
                              max_new_tokens=max_new_tokens, backend=backend)
        print("\nLEAD eval\n" + eval_table(result), flush=True)
        if lm_eval_tasks:
            from lead_ray.eval.lm_eval_bridge import lm_eval_table, run_lm_eval

            out = run_lm_eval(model_dir or folder / "model", lm_eval_tasks, load_config(folder / "config.yaml"),
                              limit=lm_eval_limit, include_path=lm_eval_include, run_dir=folder)
            print("\nlm-eval\n" + lm_eval_table(out), flush=True)
    except (ConfigError, ModelError, FileNotFoundError, EvalError) as e:
        print(f"lead-ray: error: {e}", file=sys.stderr)
        return 2
    return 0
