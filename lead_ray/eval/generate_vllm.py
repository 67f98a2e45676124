"""The `vllm` generation backend for exact match: greedy decoding with vLLM, scored exactly like the HF path.

Why: HF `generate` pads each batch to its longest prompt and decodes one batch at a time; vLLM batches without
padding, which is what a GPU needs for thousands of held-out rows. The answers must not depend on the backend, so
the prompts are the HF path's own token ids (`generate.prompt_ids`: chat template, `add_generation_prompt=True`, no
extra special tokens) passed to vLLM as ids, never as text; the replies are cut and decoded by the same
`generate.decode_reply`; and the engine is built by `models.vllm_engine.vllm_engine` (fp32 on CPU, as HF runs there).

vLLM loads a model folder, not a LoRA adapter (its own LoRA support needs a separate base model and engine
settings): `servable_folder` hands it the run's `merged/` folder, or the adapter merged into its base model and
saved as safetensors in a temporary folder that is deleted afterwards. vLLM is imported only inside the functions.
"""

from __future__ import annotations

import gc
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lead_ray.eval.generate import Messages, decode_reply, prompt_ids, score_rows, stop_ids


def vllm_greedy_generate(model_path: str | Path, tokenizer, prompts: list[Messages], max_new_tokens: int = 32, *,
                         trust_remote_code: bool = False, dtype: str | None = None) -> list[str]:
    """Greedy continuations of each chat prompt from a vLLM engine on `model_path`, decoded as `greedy_generate`
    decodes them. The engine lives only for this call (its memory is released on return)."""
    from lead_ray.models.vllm_engine import vllm_engine

    encoded = prompt_ids(tokenizer, prompts)
    if not encoded:
        return []
    # the HF path stops at the tokenizer's EOS and the generation config's: the same ids stop vLLM (read as plain
    # JSON: the folder is local, and no code of its own should run)
    gen_file = Path(model_path) / "generation_config.json"
    generation_eos = json.loads(gen_file.read_text()).get("eos_token_id") if gen_file.is_file() else None
    eos = stop_ids(tokenizer, generation_eos)
    # generation_config="vllm": the model's sampling defaults (temperature, repetition penalty ...) must not apply
    llm, _ = vllm_engine(str(model_path), max(len(ids) for ids in encoded) + max_new_tokens,
                         trust_remote_code=trust_remote_code, dtype=dtype, generation_config="vllm")
    try:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=sorted(eos),
                                detokenize=False)
        results = llm.generate([TokensPrompt(prompt_token_ids=list(ids)) for ids in encoded], params,
                               use_tqdm=False)
        return [decode_reply(tokenizer, list(r.outputs[0].token_ids), eos) for r in results]
    finally:
        _shutdown(llm)


def exact_match_vllm(model_path: str | Path, tokenizer, rows: list[tuple[Messages, str]], max_new_tokens: int = 32,
                     *, trust_remote_code: bool = False, dtype: str | None = None) -> dict[str, Any]:
    """`generate.exact_match`, generating with vLLM: same fields, same scoring; no engine starts for no rows."""
    generated = vllm_greedy_generate(model_path, tokenizer, [p for p, _ in rows], max_new_tokens,
                                     trust_remote_code=trust_remote_code, dtype=dtype) if rows else []
    return score_rows(rows, generated)


@contextmanager
def servable_folder(model_dir: Path, model: Any = None, tokenizer: Any = None, run_dir: Path | None = None
                    ) -> Iterator[Path]:
    """A folder vLLM can load with `model_dir`'s weights, for the duration of the `with` block.

    A full model folder (config.json) is used as is. A LoRA adapter folder (adapter_config.json) is served as
    `<run_dir>/merged` when `model_dir` is `<run_dir>/model` and the run saved a merged copy (`merge_adapter`);
    otherwise `model` (the adapter loaded on its base, as `load_eval_model` returns it) is merged IN PLACE and
    saved with `tokenizer` as safetensors into a temporary folder (inside `run_dir` when given, so it lands on the
    run's disk), deleted on exit. Do not use `model` after this returns.
    """
    model_dir = Path(model_dir)
    if not (model_dir / "adapter_config.json").is_file():
        yield model_dir
        return
    if run_dir is not None and model_dir.resolve() == (Path(run_dir) / "model").resolve() \
            and (Path(run_dir) / "merged" / "config.json").is_file():
        yield Path(run_dir) / "merged"
        return
    if model is None or tokenizer is None:
        raise ValueError(f"{model_dir} is a LoRA adapter: pass the loaded model and tokenizer to merge it for vLLM")
    with tempfile.TemporaryDirectory(prefix=".vllm-merged-", dir=run_dir) as tmp:
        merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        del merged, model
        gc.collect()
        yield Path(tmp)


def _shutdown(llm: Any) -> None:
    """Stop the engine's background process now rather than at interpreter exit; best effort (vLLM internals)."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    try:
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
    except Exception:  # noqa: BLE001 - a failed shutdown must not hide the results
        pass
    del llm
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass
