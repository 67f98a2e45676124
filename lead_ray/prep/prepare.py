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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lead_ray.config import (
    LeadConfig,
    ModelArgs,
    PrepArgs,
    SelectionArgs,
    TrainingArgs,
    inputs_of,
    section_values,
)
from lead_ray.config.fields import check_choice
from lead_ray.data.prepared import PoolSources, PreparedPool
from lead_ray.prep.cluster import (
    assign_clusters,
    difficulty_arms,
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


@dataclass(frozen=True)
class EmbedInputs:
    embedding_model: str
    embedding_batch_size: int
    embedding_concurrency: int
    use_gpu: bool
    trust_remote_code: bool


@dataclass(frozen=True)
class ClusterInputs:
    k: int  # num_groups for the task groups, num_arms for arms by embedding
    cluster_sample_size: int
    seed: int
    embedding_concurrency: int


@dataclass(frozen=True)
class ScoreInputs:
    scoring_backend: str
    score_batch_size: int
    score_concurrency: int
    score_tensor_parallel_size: int
    trust_remote_code: bool
    use_gpu: bool
    modes: tuple[str, ...]  # which NLLs: ("full",) = NLL(response | instruction); "response" = NLL(response) alone

    def pool_kwargs(self) -> dict[str, Any]:
        """score_pool's settings: vLLM schedules its own batches, so each engine call gets many rows (it never
        pads); the HF backend a few batches."""
        rows = max(self.score_batch_size * 8, VLLM_ROWS_PER_CALL if self.scoring_backend == "vllm" else 0)
        return {"modes": self.modes, "batch_size": rows, "concurrency": self.score_concurrency, "backend": self.scoring_backend,
                "trust_remote_code": self.trust_remote_code, "num_gpus": 1 if self.use_gpu else 0,
                "tensor_parallel_size": self.score_tensor_parallel_size}


@dataclass(frozen=True)
class WarmupInputs:
    warmup_fraction: float
    warmup_rows: str
    seed: int
    model: ModelArgs  # the warm-up run's sections (`warmup_config`)
    training: TrainingArgs
    selection: SelectionArgs


@dataclass(frozen=True)
class EnrichInputs:
    group_by: str
    arm_by: str
    num_arms: int
    seed: int
    store_embeddings: bool
    ifd_model: str
    ifd_above_one: str
    warmup_rows: str
    warmup_fraction: float


def stage_inputs(cfg: LeadConfig) -> dict[str, Any]:
    """What each preparation stage this config runs reads of it, by stage; nothing else reaches the stage."""
    e = inputs_of(cfg, EnrichInputs)
    out: dict[str, Any] = {"enriched": e, "score_base": inputs_of(
        cfg, ScoreInputs, modes=("full", "response") if e.ifd_model == "base" else ("full",))}
    if e.group_by == "embedding" or e.arm_by == "embedding" or e.store_embeddings:
        out["embed"] = inputs_of(cfg, EmbedInputs)
    if e.group_by == "embedding":
        out["groups"] = inputs_of(cfg, ClusterInputs, k=cfg.prep.num_groups)
    if e.arm_by == "embedding":
        out["arm_clusters"] = inputs_of(cfg, ClusterInputs, k=cfg.selection.num_arms)
    if e.ifd_model == "warmup":
        wcfg = warmup_config(cfg, {}, 1.0 if e.warmup_rows == "reserved" else e.warmup_fraction)
        out["warmup"] = inputs_of(wcfg, WarmupInputs, model=wcfg.model, training=wcfg.training,
                                  selection=wcfg.selection)
        out["score_warmup"] = inputs_of(cfg, ScoreInputs, modes=("full", "response"))
    return out


def stage_keys(cfg: LeadConfig, ingest_key: str, model_path: str, inputs: dict[str, Any] | None = None
               ) -> dict[str, str]:
    """Each stage's cache key: the hash of its inputs (`stage_inputs`, operational keys left out) and of the keys
    of the stages it reads from. Derived, never listed: a key changes exactly when something its stage reads does."""
    inputs, keys = inputs or stage_inputs(cfg), {}
    if "embed" in inputs:
        keys["embed"] = stage_key(ingest_key, inputs["embed"])
    for name in ("groups", "arm_clusters"):
        if name in inputs:
            keys[name] = stage_key(keys["embed"], inputs[name])
    keys["score_base"] = stage_key(ingest_key, model_path, inputs["score_base"])
    if "warmup" in inputs:
        keys["warmup"] = stage_key(ingest_key, model_path, inputs["warmup"])
        keys["score_warmup"] = stage_key(keys["warmup"], inputs["score_warmup"])
    keys["enriched"] = stage_key(keys, inputs["enriched"])
    return keys


def prepare(cfg: LeadConfig, pool_dir: Path, prep_dir: Path, model_path: str, ingest_key: str,
            log: Callable[[str], None], sources: PoolSources | None = None) -> tuple[Path, str]:
    """Run the stages that are not current; returns (enriched.parquet, its stage key). Each stage reads only its
    inputs (`stage_inputs`), and its key is their hash with its upstream keys (`stage_keys`). The Ray Data actors
    open the pool and the model through `sources` (default: the local paths), so with cloud storage they run on any
    node."""
    sources = sources or PoolSources(str(pool_dir), model_path, cfg.run.cache_dir)
    pool = pq.read_table(pool_dir / "pool.parquet",
                         columns=["id", "source", "split", "n_prompt_tokens", "n_response_tokens"])
    n = pool.num_rows
    train = pool.column("split").to_numpy(zero_copy_only=False) == "train"
    inputs = stage_inputs(cfg)
    keys = stage_keys(cfg, ingest_key, model_path, inputs)
    e: EnrichInputs = inputs["enriched"]

    if "embed" in inputs:
        emb: EmbedInputs = inputs["embed"]
        run_stage("embed", prep_dir / "embeddings.parquet", keys["embed"],
                  lambda tmp: embed_pool(pool_dir, tmp, model=emb.embedding_model,
                                         batch_size=emb.embedding_batch_size, concurrency=emb.embedding_concurrency,
                                         num_gpus=1 if emb.use_gpu else 0, trust_remote_code=emb.trust_remote_code),
                  log)
    for name, label in (("groups", "groups"), ("arm_clusters", "arm clusters")):
        if name in inputs:
            run_stage(label, prep_dir / f"{name}.parquet", keys[name],
                      lambda tmp, c=inputs[name], label=label: _cluster(prep_dir / "embeddings.parquet", c, n, label,
                                                                       tmp, log), log)

    s: ScoreInputs = inputs["score_base"]
    log("score: base model NLL per row (initial IDU" + (" and IFD)" if e.ifd_model == "base" else ")"))
    run_stage("score (base model)", prep_dir / "score_base.parquet", keys["score_base"],
              lambda tmp: _write_scores(tmp, score_pool(pool_dir, sources, label="score", **s.pool_kwargs())), log)
    base = _scores(prep_dir / "score_base.parquet")
    iu0 = base["nll_full"].astype(np.float64)

    ifd, ref_loss = np.full(n, np.nan), np.full(n, np.nan)  # ref_loss: the reference model's NLL (utility: learnable)
    if e.ifd_model == "base":
        ifd, ref_loss = ifd_score(base["nll_full"], base["nll_response"]), iu0
    elif e.ifd_model == "warmup":
        ifd, ref_loss = _warmup_ifd(cfg, pool_dir, prep_dir, model_path, inputs, keys, log, sources)
    selectable, ifd = apply_ifd_above_one(train, ifd, e.ifd_above_one)
    excluded = train & ~selectable
    if e.ifd_model == "warmup" and e.warmup_rows == "reserved":
        reserved = reference_split(train, e.warmup_fraction, e.seed)
        selectable &= ~reserved
        log(f"warm-up rows: {int(reserved.sum())} reserved (the reference model trained on them: never selected)")

    def build_enriched(tmp: Path) -> None:
        if e.group_by == "embedding":
            group = _scores(prep_dir / "groups.parquet")["cluster"]
        else:
            _, group = np.unique(pool.column("source").to_numpy(zero_copy_only=False), return_inverse=True)
        arm = np.full(n, -1, dtype=np.int64)  # -1: never selected (held out, or IFD > 1 with exclude)
        if e.arm_by == "embedding":
            arm[selectable] = _scores(prep_dir / "arm_clusters.parquet")["cluster"][selectable]
        elif selectable.any():
            arm[selectable] = difficulty_arms(e.arm_by, {"ifd": ifd[selectable], "iu0": iu0[selectable]},
                                              group[selectable], e.num_arms, e.seed)
        table = pa.table({"id": pool.column("id"), "source": pool.column("source"), "split": pool.column("split"),
                          "group": group.astype(np.int64), "arm": arm, "iu0": iu0, "ifd": ifd.astype(np.float64),
                          "ifd_excluded": excluded, "ref_loss": ref_loss.astype(np.float64),
                          "n_prompt_tokens": pool.column("n_prompt_tokens"),
                          "n_response_tokens": pool.column("n_response_tokens")})
        _write_enriched(table, tmp, prep_dir / "embeddings.parquet" if e.store_embeddings else None)
        log(f"enriched pool: {n} rows, {len(np.unique(group))} groups, {len(np.unique(arm[selectable]))} arms "
            f"by {e.arm_by}" + (f", ifd mean {np.nanmean(ifd):.3f}" if e.ifd_model != "none" else "")
            + (f", {int(excluded.sum())} train rows with IFD > 1 excluded" if excluded.any() else ""))

    run_stage("enriched pool", prep_dir / "enriched.parquet", keys["enriched"], build_enriched, log)
    return prep_dir / "enriched.parquet", keys["enriched"]


def _cluster(embeddings: Path, c: ClusterInputs, n: int, name: str, out: Path, log: Callable[[str], None]) -> None:
    sample = sample_embeddings(embeddings, c.cluster_sample_size, c.seed)
    centroids = spherical_kmeans(sample, c.k, seed=c.seed)
    log(f"{name}: k-means of {len(sample)} sampled embeddings into {len(centroids)} clusters; assigning")
    cluster = assign_clusters(embeddings, centroids, n, c.embedding_concurrency)
    pq.write_table(pa.table({"id": np.arange(n, dtype=np.int64), "cluster": cluster}), out)


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
    check_choice(PrepArgs, "ifd_above_one", mode)
    above = np.asarray(ifd) > 1.0
    if mode == "cap":
        return train.copy(), np.minimum(ifd, 1.0)
    return train & ~above, np.asarray(ifd, dtype=np.float64).copy()


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


def warmup_config(cfg: LeadConfig, where: dict[str, str], budget: float) -> LeadConfig:
    """The warm-up run: the config's model and training recipe (LoRA, merged), selection turned off (the `random`
    selector, one arm, each row once, rounds of the config's sample rate). Every other selection key is at its
    default and ΔL′ and evaluation at theirs, so tuning the bandit never redoes the warm-up."""
    defaults = TrainingArgs()
    selection = {**section_values(SelectionArgs(), results_only=False), "selector": "random", "budget": budget,
                 "max_uses": 1, "num_arms": 1, "arms_per_round": 1, "sample_rate": cfg.selection.sample_rate,
                 "max_rounds": cfg.selection.max_rounds}
    return cfg.replace(**where, **selection, use_lora=True, merge_adapter=True, eval_every_round=False,
                       loss_change_params=defaults.loss_change_params, eval_max_samples=defaults.eval_max_samples,
                       loss_change_sketch_dim=defaults.loss_change_sketch_dim)


def _warmup_ifd(cfg: LeadConfig, pool_dir: Path, prep_dir: Path, model_path: str, inputs: dict[str, Any],
                keys: dict[str, str], log: Callable[[str], None], sources: PoolSources
                ) -> tuple[np.ndarray, np.ndarray]:
    """(IFD, the warm-up model's NLL(response | instruction)) with a warm-up model: a short LoRA fine-tune on a
    random `warmup_fraction` of the train split, run by the same TorchTrainer loop with selection turned off
    (`warmup_config`), then one scoring pass."""
    w: WarmupInputs = inputs["warmup"]
    # with cloud storage the warm-up is a run in <run>/warmup, so its workers and checkpoints may be anywhere
    where = {"run_name": "warmup", "output_dir": sources.storage} if sources.storage else \
        {"run_name": "run", "output_dir": str(prep_dir / "warmup.partial")}
    wcfg = warmup_config(cfg, where, 1.0 if w.warmup_rows == "reserved" else w.warmup_fraction)

    def build_warmup(tmp: Path) -> None:
        pool = pq.read_table(pool_dir / "pool.parquet", columns=["id", "split"])
        train = pool.column("split").to_numpy(zero_copy_only=False) == "train"
        if w.warmup_rows == "reserved":
            train = reference_split(train, w.warmup_fraction, w.seed)
        tmp.mkdir(parents=True)
        selectable = tmp / "warmup_pool.parquet"  # one arm, one group: every train row may be drawn
        pq.write_table(pa.table({"id": pool.column("id"), "split": pool.column("split"),
                                 "arm": np.where(train, 0, -1).astype(np.int64),
                                 "group": np.zeros(pool.num_rows, np.int64), "iu0": np.zeros(pool.num_rows),
                                 "ifd_excluded": np.zeros(pool.num_rows, bool)}),
                       selectable)
        log(f"warm-up: LoRA fine-tune on a random {w.warmup_fraction:g} of the train split (selection off)")
        train_with_selection(wcfg, PreparedPool(pool_dir, selectable, model_path, sources))

    run_stage("warm-up model", prep_dir / "warmup", keys["warmup"], build_warmup, log)
    warm = dataclasses.replace(sources, model=f"{sources.storage}/warmup/merged" if sources.storage
                               else str(prep_dir / "warmup" / "run" / "merged"))
    log("score: warm-up model NLL(response | instruction) and NLL(response) per row (IFD)")
    run_stage("score (warm-up model)", prep_dir / "score_warmup.parquet", keys["score_warmup"],
              lambda tmp: _write_scores(tmp, score_pool(pool_dir, warm, label="score (warm-up)",
                                                        **inputs["score_warmup"].pool_kwargs())), log)
    scores = _scores(prep_dir / "score_warmup.parquet")
    return ifd_score(scores["nll_full"], scores["nll_response"]), scores["nll_full"].astype(np.float64)
