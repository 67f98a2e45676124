"""Per-row response NLLs for IU and IFD: one streaming pass per model in a Ray Data actor pool.

Two sequences can be scored per row (`lead_ray.models.nll.MODES`):
- `full`: the whole conversation, assistant tokens counted: NLL(response | instruction), the IU of LEAD;
- `response`: the assistant tokens alone after one start token: NLL(response), IFD's denominator.
Backends: `hf` (batched forward passes, here) and `vllm` (prompt logprobs, `lead_ray.prep.score_vllm`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from lead_ray.data.prepared import PoolSources
from lead_ray.data.store import RowStore
from lead_ray.models.load import cpu_threads, load_model
from lead_ray.models.nll import collate, response_nll, scoring_row, start_token_id
from lead_ray.runtime.console import Progress
from lead_ray.runtime.storage import stage

BACKENDS = ("hf", "vllm")


def ifd_score(nll_full: np.ndarray, nll_response: np.ndarray) -> np.ndarray:
    """IFD = NLL(response | instruction) / NLL(response), uncapped (1 where NLL(response) is 0). A ratio above 1
    means the instruction makes the answer less likely: preparation excludes or caps it (`ifd_above_one`)."""
    return np.divide(nll_full, nll_response, out=np.ones_like(nll_full, dtype=np.float64), where=nll_response > 0)


class HFScorer:
    """Ray Data callable: loads the model once per actor; returns `nll_<mode>` per row for each mode."""

    def __init__(self, model_source: str, pool_source: str, cache_dir: str, modes: tuple[str, ...] = ("full",),
                 batch_tokens: int = 4096, trust_remote_code: bool = False, threads_divisor: int = 1):
        import torch


        self.torch = torch
        cpu_threads(threads_divisor)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        model_path = str(stage(model_source, cache_dir))  # node-local copies when the run is in cloud storage
        self.model = load_model(model_path, trust_remote_code=trust_remote_code, dtype=dtype).to(self.device).eval()
        self.pad_id = self.model.config.pad_token_id or 0
        self.start_id = start_token_id(self.model.config)
        self.store = RowStore(stage(pool_source, cache_dir) / "pool.arrow")
        self.modes, self.batch_tokens = tuple(modes), batch_tokens

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = batch["id"].astype(np.int64)
        out = {"id": ids}
        for mode in self.modes:
            out[f"nll_{mode}"] = self.score([scoring_row(*self.store.get(int(i)), mode, self.start_id) for i in ids])
        return out

    def score(self, rows: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """Mean NLL of the masked tokens of each row; rows of similar length are batched together."""

        out = np.zeros(len(rows), dtype=np.float32)
        lengths = np.array([len(r[0]) for r in rows])
        order = np.argsort(lengths, kind="stable")  # similar lengths together: little padding
        step = max(1, self.batch_tokens // int(lengths.max(initial=1)))
        with self.torch.inference_mode():
            for s in range(0, len(order), step):
                pick = order[s : s + step]
                t = {k: v.to(self.device) for k, v in collate([rows[i] for i in pick], self.pad_id).items()}
                logits = self.model(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).logits
                nll, _ = response_nll(logits, t["input_ids"], t["assistant_mask"])
                out[pick] = nll.float().cpu().numpy()
        return out


def length_sorted_ids(pool_dir: Path) -> np.ndarray:
    """Pool ids, longest row first: a batch then holds rows of about one length (little padding for the HF
    backend, evenly sized scheduler steps for vLLM), and a sequence too long for the device fails at once."""
    t = pq.read_table(pool_dir / "pool.parquet", columns=["id", "n_prompt_tokens", "n_response_tokens"])
    lengths = t.column("n_prompt_tokens").to_numpy() + t.column("n_response_tokens").to_numpy()
    return t.column("id").to_numpy()[np.argsort(-lengths, kind="stable")]


def score_pool(pool_dir: Path, sources: PoolSources, *, modes: tuple[str, ...] = ("full",), backend: str = "hf",
               batch_size: int, concurrency: int, trust_remote_code: bool = False, num_gpus: float = 0,
               tensor_parallel_size: int = 1, label: str = "scoring") -> dict[str, np.ndarray]:
    """`{mode: per-row mean NLL}` for every pool row, indexed by id, streamed through a Ray Data actor pool whose
    actors open the pool and model of `sources` (on any node). With vLLM each actor's engine shards the model over
    `tensor_parallel_size` GPUs (the actor takes `num_gpus` × that many)."""
    import ray

    if backend == "hf":
        scorer, kwargs = HFScorer, {"threads_divisor": concurrency}
    elif backend == "vllm":
        from lead_ray.prep.score_vllm import VLLMScorer

        scorer, kwargs = VLLMScorer, {"tensor_parallel_size": tensor_parallel_size}
    else:
        raise ValueError(f"unknown scoring backend {backend!r}; expected one of {BACKENDS}")
    order = length_sorted_ids(pool_dir)
    n = len(order)
    # many small blocks, so results stream back (and progress shows) while the pass runs, where one Parquet file
    # would be one block that returns only at the end
    ds = ray.data.from_numpy(np.array_split(order, max(1, n // max(batch_size, 1)))).rename_columns({"data": "id"})
    ds = ds.map_batches(scorer, fn_constructor_args=(sources.model, sources.pool, sources.cache_dir, tuple(modes)),
                        fn_constructor_kwargs={"trust_remote_code": trust_remote_code, **kwargs},
                        batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=concurrency),
                        num_gpus=num_gpus * (tensor_parallel_size if backend == "vllm" else 1) or None,
                        batch_format="numpy")
    out = {mode: np.full(n, np.nan, dtype=np.float32) for mode in modes}
    progress = Progress(label, n)
    for b in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for mode in modes:
            out[mode][b["id"]] = b[f"nll_{mode}"]
        progress.update(len(b["id"]))
    progress.close()
    for mode, values in out.items():
        if np.isnan(values).any():
            raise RuntimeError(f"{label} lost rows: {int(np.isnan(values).sum())} of {n} have no nll_{mode}")
    return out
