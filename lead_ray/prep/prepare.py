"""LEAD's offline preparation, as resumable stages over the ingested pool (docs/architecture.md).

    embed instructions → faiss spherical k-means → task group   (group_by: embedding | source)
    base model NLL(response | instruction)       → iu0 (IDU_0)
    warm-up LoRA on a random slice → NLL ratio   → ifd, ref_loss (ifd_model: warmup | base | none)
    warm-up rows (warmup_rows: reserved)         → never selected, so no row is scored by a model that trained on it
    IFD > 1 (a mismatched pair)                  → excluded    (ifd_above_one: exclude | cap)
    1-D k-means on ifd (or iu0, or embeddings)   → arm          (arm_by)

The output, `prep/enriched.parquet`, has one row per pool row, in id order:
`id, source, split, group, arm, iu0, ifd, ifd_excluded, ref_loss, n_prompt_tokens, n_response_tokens`
(+ `embedding` with store_embeddings). `ref_loss` is the reference model's NLL(response | instruction), which
`utility: learnable` subtracts. Eval-split rows and excluded rows get arm -1: no selector may pick them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lead_ray.config import LeadConfig
from lead_ray.data.prepared import PoolSources, PreparedPool
from lead_ray.prep.cluster import (
    assign_clusters,
    kmeans_1d,
    open_parquet,
    sample_embeddings,
    spherical_kmeans,
)
from lead_ray.prep.embed import embed_pool
from lead_ray.prep.score import ifd_score, score_pool
from lead_ray.runtime.stages import run_stage, stage_key
from lead_ray.train.fit import train_with_selection

VLLM_ROWS_PER_CALL = 1024  # rows per vLLM generate call in the scoring pass


def _scores(path: Path) -> dict[str, np.ndarray]:
    t = pq.read_table(path)
    order = np.argsort(t.column("id").to_numpy())
    return {name: t.column(name).to_numpy()[order] for name in t.column_names}


def _write_scores(tmp: Path, values: dict[str, np.ndarray]) -> None:
    n = len(next(iter(values.values())))
    pq.write_table(pa.table({"id": np.arange(n, dtype=np.int64), **{f"nll_{k}": v for k, v in values.items()}}),
                   tmp)


def prepare(cfg: LeadConfig, pool_dir: Path, prep_dir: Path, model_path: str, ingest_key: str,
            log: Callable[[str], None], sources: PoolSources | None = None) -> tuple[Path, str]:
    """Run the stages that are not current; returns (enriched.parquet, its stage key). The Ray Data actors open the
    pool and the model through `sources` (default: the local paths), so with cloud storage they run on any node."""
    sources = sources or PoolSources(str(pool_dir), model_path, cfg.cache_dir)

    pool = pq.read_table(pool_dir / "pool.parquet",
                         columns=["id", "source", "split", "n_prompt_tokens", "n_response_tokens"])
    n = pool.num_rows
    train = pool.column("split").to_numpy(zero_copy_only=False) == "train"
    num_gpus = 1 if cfg.use_gpu else 0
    # vLLM schedules its own batches: give each engine call many rows (it never pads), the HF backend a few batches
    rows_per_call = max(cfg.score_batch_size * 8, VLLM_ROWS_PER_CALL if cfg.scoring_backend == "vllm" else 0)
    scoring = {"batch_size": rows_per_call, "concurrency": cfg.score_concurrency, "backend": cfg.scoring_backend,
               "trust_remote_code": cfg.trust_remote_code, "num_gpus": num_gpus,
               "tensor_parallel_size": cfg.score_tensor_parallel_size}
    keys: dict[str, str] = {}

    need_embeddings = cfg.group_by == "embedding" or cfg.arm_by == "embedding" or cfg.store_embeddings
    if need_embeddings:
        keys["embed"] = stage_key(ingest_key, cfg.embedding_model)
        run_stage("embed", prep_dir / "embeddings.parquet", keys["embed"],
                  lambda tmp: embed_pool(pool_dir, tmp, model=cfg.embedding_model,
                                         batch_size=cfg.embedding_batch_size, concurrency=cfg.embedding_concurrency,
                                         num_gpus=num_gpus, trust_remote_code=cfg.trust_remote_code), log)

    def clusters(name: str, k: int) -> Callable[[Path], None]:
        def build(tmp: Path) -> None:
            sample = sample_embeddings(prep_dir / "embeddings.parquet", cfg.cluster_sample_size, cfg.seed)
            centroids = spherical_kmeans(sample, k, seed=cfg.seed)
            log(f"{name}: k-means of {len(sample)} sampled embeddings into {len(centroids)} clusters; assigning")
            cluster = assign_clusters(prep_dir / "embeddings.parquet", centroids, n, cfg.embedding_concurrency)
            pq.write_table(pa.table({"id": np.arange(n, dtype=np.int64), "cluster": cluster}), tmp)
        return build

    if cfg.group_by == "embedding":
        keys["groups"] = stage_key(keys["embed"], cfg.num_groups, cfg.cluster_sample_size, cfg.seed)
        run_stage("groups", prep_dir / "groups.parquet", keys["groups"],
                  clusters("groups", cfg.num_groups), log)
    if cfg.arm_by == "embedding":
        keys["arm_clusters"] = stage_key(keys["embed"], cfg.num_arms, cfg.cluster_sample_size, cfg.seed)
        run_stage("arm clusters", prep_dir / "arm_clusters.parquet", keys["arm_clusters"],
                  clusters("arm clusters", cfg.num_arms), log)

    base_modes = ("full", "response") if cfg.ifd_model == "base" else ("full",)
    keys["score_base"] = stage_key(ingest_key, model_path, cfg.scoring_backend, base_modes)
    log("score: base model NLL per row (initial IDU" + (" and IFD)" if cfg.ifd_model == "base" else ")"))
    run_stage("score (base model)", prep_dir / "score_base.parquet", keys["score_base"],
              lambda tmp: _write_scores(tmp, score_pool(pool_dir, sources, modes=base_modes, label="score",
                                                        **scoring)), log)
    base = _scores(prep_dir / "score_base.parquet")
    iu0 = base["nll_full"].astype(np.float64)

    ifd, ref_loss = np.full(n, np.nan), np.full(n, np.nan)  # ref_loss: the reference model's NLL (utility: learnable)
    if cfg.ifd_model == "base":

        ifd, ref_loss = ifd_score(base["nll_full"], base["nll_response"]), iu0
    elif cfg.ifd_model == "warmup":
        ifd, ref_loss = _warmup_ifd(cfg, pool_dir, prep_dir, model_path, ingest_key, keys, scoring, log, sources)
    selectable, ifd = apply_ifd_above_one(train, ifd, cfg.ifd_above_one)
    excluded = train & ~selectable
    if cfg.ifd_model == "warmup" and cfg.warmup_rows == "reserved":
        reserved = reference_split(train, cfg.warmup_fraction, cfg.seed)
        selectable &= ~reserved
        log(f"warm-up rows: {int(reserved.sum())} reserved (the reference model trained on them: never selected)")

    keys["enriched"] = stage_key(keys, cfg.group_by, cfg.arm_by, cfg.num_arms, cfg.seed, cfg.store_embeddings,
                                 cfg.ifd_above_one, cfg.warmup_rows)

    def build_enriched(tmp: Path) -> None:
        if cfg.group_by == "embedding":
            group = _scores(prep_dir / "groups.parquet")["cluster"]
        else:
            _, group = np.unique(pool.column("source").to_numpy(zero_copy_only=False), return_inverse=True)
        arm = np.full(n, -1, dtype=np.int64)  # -1: never selected (held out, or IFD > 1 with exclude)
        if cfg.arm_by == "embedding":
            arm[selectable] = _scores(prep_dir / "arm_clusters.parquet")["cluster"][selectable]
        elif selectable.any():
            arm[selectable] = kmeans_1d((ifd if cfg.arm_by == "ifd" else iu0)[selectable], cfg.num_arms,
                                        seed=cfg.seed)
        table = pa.table({"id": pool.column("id"), "source": pool.column("source"), "split": pool.column("split"),
                          "group": group.astype(np.int64), "arm": arm, "iu0": iu0, "ifd": ifd.astype(np.float64),
                          "ifd_excluded": excluded, "ref_loss": ref_loss.astype(np.float64),
                          "n_prompt_tokens": pool.column("n_prompt_tokens"),
                          "n_response_tokens": pool.column("n_response_tokens")})
        _write_enriched(table, tmp, prep_dir / "embeddings.parquet" if cfg.store_embeddings else None)
        log(f"enriched pool: {n} rows, {len(np.unique(group))} groups, {len(np.unique(arm[selectable]))} arms "
            f"by {cfg.arm_by}" + (f", ifd mean {np.nanmean(ifd):.3f}" if cfg.ifd_model != "none" else "")
            + (f", {int(excluded.sum())} train rows with IFD > 1 excluded" if excluded.any() else ""))

    run_stage("enriched pool", prep_dir / "enriched.parquet", keys["enriched"], build_enriched, log)
    return prep_dir / "enriched.parquet", keys["enriched"]


def reference_split(train: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded random `fraction` of the train rows (at least one): the warm-up's rows with `warmup_rows: reserved`,
    RHO-LOSS's holdout, so the reference loss of every selectable row comes from a model that never trained on it."""
    rows = np.flatnonzero(train)
    pick = np.random.default_rng([seed, 2505]).permutation(rows)[: max(1, int(round(fraction * len(rows))))]
    mask = np.zeros(len(train), dtype=bool)
    mask[pick] = True
    return mask


def apply_ifd_above_one(train: np.ndarray, ifd: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(selectable rows, IFD as stored). IFD > 1 means the instruction makes the answer less likely, the mark of a
    mismatched pair: `exclude` keeps such train rows out of selection (the IFD authors drop them), `cap` keeps them
    with IFD 1. Rows without an IFD (NaN, ifd_model: none) stay selectable."""
    above = np.asarray(ifd) > 1.0
    if mode == "cap":
        return train.copy(), np.minimum(ifd, 1.0)
    if mode == "exclude":
        return train & ~above, np.asarray(ifd, dtype=np.float64).copy()
    raise ValueError(f"ifd_above_one must be exclude or cap, got {mode!r}")


def _write_enriched(table: pa.Table, out: Path, embeddings: Path | None, chunk: int = 65536) -> None:
    """Write in id order; with embeddings, stream them alongside (embed_pool writes them in id order)."""
    if embeddings is None:
        pq.write_table(table, out)
        return
    writer = None
    batches = open_parquet(embeddings).iter_batches(batch_size=chunk, columns=["id", "embedding"])
    for start in range(0, table.num_rows, chunk):
        part = table.slice(start, chunk)
        emb = next(batches)
        if not np.array_equal(emb.column(0).to_numpy(), part.column("id").to_numpy()):
            raise RuntimeError(f"{embeddings} is not in id order; delete it to recompute")
        part = part.append_column("embedding", emb.column(1))
        writer = writer or pq.ParquetWriter(out, part.schema)
        writer.write_table(part)
    writer.close()


def _warmup_ifd(cfg: LeadConfig, pool_dir: Path, prep_dir: Path, model_path: str, ingest_key: str,
                keys: dict[str, str], scoring: dict[str, Any], log: Callable[[str], None], sources: PoolSources
                ) -> tuple[np.ndarray, np.ndarray]:
    """(IFD, the warm-up model's NLL(response | instruction)) with a warm-up model: a short LoRA fine-tune on a random `warmup_fraction` of the train split, run by
    the same TorchTrainer loop with selection turned off (the `random` selector), then one scoring pass."""

    recipe = {k: getattr(cfg, k) for k in ("learning_rate", "weight_decay", "lr_decay", "lr_decay_every",
                                           "per_device_train_batch_size", "gradient_accumulation_steps",
                                           "max_grad_norm", "lora_rank", "lora_alpha", "lora_dropout", "bf16",
                                           "sample_rate", "seed", "warmup_fraction", "warmup_rows")}
    keys["warmup"] = stage_key(ingest_key, model_path, recipe)

    def build_warmup(tmp: Path) -> None:

        pool = pq.read_table(pool_dir / "pool.parquet", columns=["id", "split"])
        train = pool.column("split").to_numpy(zero_copy_only=False) == "train"
        budget = cfg.warmup_fraction  # of the train rows, drawn by the random selector
        if cfg.warmup_rows == "reserved":  # exactly the reference split, each once
            train, budget = reference_split(train, cfg.warmup_fraction, cfg.seed), 1.0
        tmp.mkdir(parents=True)
        selectable = tmp / "warmup_pool.parquet"  # one arm, one group: every train row may be drawn
        pq.write_table(pa.table({"id": pool.column("id"), "split": pool.column("split"),
                                 "arm": np.where(train, 0, -1).astype(np.int64),
                                 "group": np.zeros(pool.num_rows, np.int64), "iu0": np.zeros(pool.num_rows),
                                 "ifd_excluded": np.zeros(pool.num_rows, bool)}),
                       selectable)
        # with cloud storage the warm-up is a run in <run>/warmup, so its workers and checkpoints may be anywhere
        where = {"run_name": "warmup", "output_dir": sources.storage} if sources.storage else \
            {"run_name": "run", "output_dir": str(tmp)}
        wcfg = dataclasses.replace(cfg, **where, selector="random", budget=budget, max_uses=1,
                                   num_arms=1, arms_per_round=1, use_lora=True, merge_adapter=True,
                                   eval_every_round=False)
        log(f"warm-up: LoRA fine-tune on a random {cfg.warmup_fraction:g} of the train split (selection off)")
        train_with_selection(wcfg, PreparedPool(pool_dir, selectable, model_path, sources))

    run_stage("warm-up model", prep_dir / "warmup", keys["warmup"], build_warmup, log)
    warm = dataclasses.replace(sources, model=f"{sources.storage}/warmup/merged" if sources.storage
                               else str(prep_dir / "warmup" / "run" / "merged"))
    keys["score_warmup"] = stage_key(keys["warmup"], cfg.scoring_backend)
    log("score: warm-up model NLL(response | instruction) and NLL(response) per row (IFD)")
    run_stage("score (warm-up model)", prep_dir / "score_warmup.parquet", keys["score_warmup"],
              lambda tmp: _write_scores(tmp, score_pool(pool_dir, warm, modes=("full", "response"),
                                                        label="score (warm-up)", **scoring)), log)
    scores = _scores(prep_dir / "score_warmup.parquet")
    return ifd_score(scores["nll_full"], scores["nll_response"]), scores["nll_full"].astype(np.float64)
