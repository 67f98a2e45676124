"""train_loop_per_worker: one long fit; each round asks the SelectionService what to train on.

    setup → resume → for each round: plan_round → train_round → end the round → save_round → finish

The per-sample losses that feed IDU come from the training forward pass itself (no extra inference). Training
metrics travel the Ray Train way (`ray.train.report`); rank 0 also keeps their history in every checkpoint, so the
run's metrics.jsonl survives restarts. The selection actor holds selection state only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch

from lead_ray.config import LeadConfig, ModelArgs, SelectionArgs, TrainingArgs
from lead_ray.data.store import RowStore
from lead_ray.models.load import cpu_threads, load_model, load_tokenizer
from lead_ray.models.memory import GIB, does_not_fit, training_memory
from lead_ray.models.nll import batch_response_nll, collate, response_nll, target_tokens, to_device
from lead_ray.runtime.console import clock, log, rounds_time_left
from lead_ray.runtime.ray_private import train_report_logger
from lead_ray.runtime.run_files import RoundMetrics
from lead_ray.runtime.storage import stage
from lead_ray.select.rounds import Rescore, RoundPlan
from lead_ray.train.checkpoint import (
    STOPPED,
    load_training_state,
    save_final_model,
    save_training_state,
    write_history,
)
from lead_ray.train.collective import all_sum, broadcast_plan
from lead_ray.train.direction import RoundDirectionTracker, direction_parameters
from lead_ray.train.parallel import (
    effective_strategy,
    gradient_sync,
    restore_training_state,
    training_state,
    wrap_model,
)
from lead_ray.train.reporter import LossReporter, report_interval
from lead_ray.train.tracking import selection_scalars


@dataclass(frozen=True)
class WorkerConfig:
    """What a Train worker reads of the config, and nothing else: the model and training sections, the selection
    section (its round and use limits), the seed, the token limit (for the memory estimate) and the console's
    verbosity."""

    seed: int
    max_length: int
    verbose: bool
    model: ModelArgs
    training: TrainingArgs
    selection: SelectionArgs

    @classmethod
    def of(cls, cfg: LeadConfig) -> WorkerConfig:
        return cls(cfg.run.seed, cfg.data.max_length, cfg.tracking.verbose, cfg.model, cfg.training, cfg.selection)

    def get(self, key: str) -> Any:
        """A key by its config name, wherever it sits (the memory estimate reads keys by name)."""
        for part in (self, self.model, self.training, self.selection):
            if key in getattr(type(part), "__dataclass_fields__", {}):
                return getattr(part, key)
        raise KeyError(key)


@dataclass
class Worker:
    """What a worker sets up once: config, its place in the group, the model and optimizer, the row store."""

    cfg: WorkerConfig
    service: Any
    rank: int
    world: int
    device: torch.device
    use_bf16: bool
    base: torch.nn.Module  # the model before DDP wrapping: what is saved and evaluated
    model: torch.nn.Module
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    trainable: list[torch.nn.Parameter]
    tracker: RoundDirectionTracker | None  # rank 0 (every rank under FSDP, whose shards it gathers): ḡ and u
    store: RowStore
    eval_ids: np.ndarray
    model_path: str

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bool(self.use_bf16))

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    @property
    def strategy(self) -> str:
        return effective_strategy(self.cfg.training.parallel_strategy, self.world)


@dataclass
class Progress:
    """What a checkpoint carries besides weights and selection state."""

    step: int = 0
    nll_before: float | None = None
    selection_seconds: float = 0.0  # what the loop waits on selection: service calls and any re-scoring pass
    history: list[RoundMetrics] = field(default_factory=list)  # rank 0: each round's training metrics


# Errors raised by the code, the config or the data (a bad value, a missing key, a row id outside the pool), not
# by a lost node, a network or a device: a worker-group restart meets them again, so they are not retried.
RECURRING = (ValueError, TypeError, KeyError, IndexError, AttributeError, ZeroDivisionError, NotImplementedError,
             AssertionError)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """One attempt of the run on this worker. If the previous attempt failed with a `RECURRING` error, every rank
    stops on it at once (a checkpoint holding the reason) instead of loading the model to fail again."""
    service, rank = config["service"], ray.train.get_context().get_world_rank()
    error = ray.get(service.recorded_error.remote())
    if error is not None:
        stop(rank, f"{error} (not retried: a restart meets the same error)", trained=ray.train.get_checkpoint()
             is not None, advice="Fix its cause, then rerun (with overwrite_output_dir=true once a round was saved)")
        return
    try:
        _attempt(config)
    except RECURRING as e:
        first = (str(e).strip().splitlines() or [""])[-1][:300]
        ray.get(service.record_error.remote(f"{type(e).__name__} on rank {rank}: {first}"))
        raise


def _attempt(config: dict[str, Any]) -> None:
    try:
        w = setup(config)
    except DoesNotFit as e:  # the same on every rank and every retry: end the run in one line instead
        stop(ray.train.get_context().get_world_rank(), str(e), advice="", trained=False)
        return
    reporter = LossReporter(w.service, min_seconds=report_interval(w.world), phase=w.rank / w.world)
    progress = resume(w, reporter)
    if progress is None:
        return  # the group died after the run had finished: nothing left to train
    while (plan := plan_round(w, progress, reporter)) is not None:
        metrics = train_round(w, progress, plan, reporter)
        if not math.isfinite(metrics.train_loss):  # the same on every rank (summed); retrying cannot fix it
            stop(w.rank, f"the training loss is {metrics.train_loss} in round {metrics.round} "
                 f"(learning_rate={w.cfg.training.learning_rate})", advice="Lower learning_rate and rerun with "
                 "overwrite_output_dir=true")
            return
        t_select = time.time()
        metrics.selection_seconds = progress.selection_seconds  # cumulative, up to this round's plan
        grad, step = w.tracker.end_round() if w.tracker is not None else (None, None)
        stats = reporter.end_round(w.rank, w.world, grad, step, plan.round)
        progress.selection_seconds += time.time() - t_select
        save_round(w, progress, metrics, stats, reporter.rounds)
    finish(w, progress, reporter.rounds)


def setup(config: dict[str, Any]) -> Worker:
    cfg: WorkerConfig = config["cfg"]
    if not cfg.verbose:
        train_report_logger().setLevel(logging.WARNING)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(worker_seed(cfg.seed, rank))
    cpu_threads(ctx.get_local_world_size())  # Ray pins OMP threads to 1 CPU per worker; use this node's share
    sources = config["sources"]  # with cloud storage, node-local copies are made once per node
    model_path = str(stage(sources.model, sources.cache_dir))
    tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code)
    lora = {"rank": cfg.model.lora_rank, "alpha": cfg.model.lora_alpha, "dropout": cfg.model.lora_dropout} if cfg.model.use_lora else None
    use_bf16 = bool(cfg.training.bf16 if cfg.training.bf16 is not None else (cfg.training.use_gpu and torch.cuda.is_available()))
    device = ray.train.torch.get_device()
    check_memory(cfg, model_path, use_bf16, device, rank)
    base = load_model(model_path, trust_remote_code=cfg.model.trust_remote_code, lora=lora,
                      dtype=torch.bfloat16 if use_bf16 else torch.float32,
                      attn_implementation=cfg.training.attn_implementation, gradient_checkpointing=cfg.training.gradient_checkpointing)
    strategy = effective_strategy(cfg.training.parallel_strategy, world)
    model = wrap_model(base, strategy, device, use_bf16)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.training.learning_rate, weight_decay=cfg.training.weight_decay)
    which = cfg.training.loss_change_params if cfg.training.loss_change_params != "auto" else "all" if cfg.model.use_lora else "last_block"
    tracker = RoundDirectionTracker(direction_parameters(base, which, base.config.num_hidden_layers),
                                    cfg.training.loss_change_sketch_dim, cfg.seed) if rank == 0 or strategy == "fsdp" else None
    eval_ids = np.asarray(ray.get(config["eval_shards"][rank]), dtype=np.int64)
    return Worker(cfg, config["service"], rank, world, device, use_bf16, base, model, tokenizer, optimizer, trainable,
                  tracker, RowStore(stage(sources.pool, sources.cache_dir) / "pool.arrow"), eval_ids, model_path)


class DoesNotFit(Exception):
    """The memory estimate exceeds the device: raised before any weight is loaded."""


def check_memory(cfg: WorkerConfig, model_path: str, use_bf16: bool, device: torch.device, rank: int) -> None:
    """Rank 0 logs the estimate of what a worker holds at its peak; a run that would not fit its GPU (or
    `memory_limit_gb`) stops here."""
    estimate = training_memory(model_path, cfg, use_bf16, cfg.model.trust_remote_code)
    if estimate is None:
        return
    if rank == 0:
        log(f"memory estimate: {estimate.describe()}")
    if cfg.training.memory_limit_gb is not None:
        limit, name = int(cfg.training.memory_limit_gb * GIB), "memory_limit_gb"
    elif device.type == "cuda":
        limit, name = torch.cuda.mem_get_info(device)[1], torch.cuda.get_device_name(device)
    else:
        return
    reason = does_not_fit(estimate, limit, name)
    if reason:
        raise DoesNotFit(reason)


def resume(w: Worker, reporter: LossReporter) -> Progress | None:
    """Progress from the latest checkpoint (rank 0 restores the service from it too), or a fresh start; None if
    that checkpoint is the final one."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None and _report_again_if_final(checkpoint, w.rank):
        return None
    progress, selection = Progress(), None  # no checkpoint: the model starts from the base, so does selection
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = load_training_state(Path(d))
        restore_training_state(w.model, w.optimizer, w.strategy, state["weights"], state["optimizer"])
        progress = Progress(state["step"], state["nll_before"], state["selection_seconds"], state["history"])
        selection = state["selection_rounds"]
        _log(w, f"resumed from checkpoint at optimizer step {progress.step}")
    if w.rank == 0:
        reporter.restore(selection)
    if progress.nll_before is None:
        progress.nll_before = evaluate(w)
        _log(w, f"held-out NLL before training: {progress.nll_before:.4f}")
    return progress


def plan_round(w: Worker, progress: Progress, reporter: LossReporter) -> RoundPlan | None:
    """The next round's plan on every rank (None: the run is over), after any re-scoring the selector asks for."""
    while True:
        t_select = time.time()
        plan = broadcast_plan(reporter.next_round() if w.rank == 0 else None, w.world)
        if isinstance(plan, Rescore):
            rescore(w, plan.ids[w.rank :: w.world])
            all_sum([0.0], w.world)  # a barrier: every worker's scores are in before rank 0 asks again
        progress.selection_seconds += time.time() - t_select
        if not isinstance(plan, Rescore):
            return plan


def train_round(w: Worker, progress: Progress, plan: RoundPlan, reporter: LossReporter) -> dict[str, Any]:
    """One pass over the round's rows; each micro-batch's per-row losses go to the service as they come.

    An optimizer step's loss is the sum of its token NLLs over the target tokens of every rank (counted from the
    plan, which every rank has): padding rows and short rows on one rank do not dilute it, so N workers take the step one worker
    with N times the batch would.
    """
    cfg, t0, round_index = w.cfg, time.time(), plan.round
    torch.manual_seed(worker_seed(cfg.seed, w.rank, round_index))  # dropout etc.: the same after a restart
    # the round's rows in a seeded order, as a data loader shuffles (the same order again after a restart)
    ids = plan.ids[np.random.default_rng([cfg.seed, round_index]).permutation(len(plan.ids))]
    micro = cfg.training.per_device_train_batch_size
    by_rank = np.concatenate([ids, np.full(-len(ids) % (micro * w.world), -1, dtype=np.int64)]).reshape(-1, w.world)
    mine = by_rank[:, w.rank]  # rank r trains column r: rows r, r + world, ...
    # every rank knows every rank's rows, so each step's token count needs no collective (and no host sync)
    targets = np.array([target_tokens(w.store.get(int(i))[1]) if i >= 0 else 0 for i in by_rank.ravel()],
                       dtype=np.int64).reshape(by_rank.shape).sum(axis=1)
    if w.tracker is not None:
        w.tracker.start_round()
    reporter.start_round()
    lrs, totals = [], torch.zeros(3, dtype=torch.float64, device=w.device)  # loss x tokens, targets, inputs
    w.model.train()
    window = micro * cfg.training.gradient_accumulation_steps  # this rank's rows per optimizer step
    for start in range(0, len(mine), window):
        rows = mine[start : start + window]
        step_tokens = float(targets[start : start + window].sum())
        chunks = [rows[c : c + micro] for c in range(0, len(rows), micro)]
        batches = [device_batch(w, chunk, ids[0]) for chunk in chunks]  # the step's copies start before its compute
        for k, (chunk, batch) in enumerate(zip(chunks, batches)):  # DDP all-reduces once, on the last micro-batch
            with gradient_sync(w.model, w.strategy, w.world, enabled=k == len(chunks) - 1):
                totals += train_micro_batch(w, chunk, batch, reporter, w.world / max(step_tokens, 1.0))
        lrs.append(optimizer_step(w, progress.step))
        progress.step += 1
    reporter.flush()
    loss_sum, targets, n_tokens = all_sum(totals.tolist(), w.world)  # the round's one device sync; a barrier too
    return RoundMetrics(round=round_index, train_loss=loss_sum / max(targets, 1.0), num_samples=len(ids),
                        num_tokens=int(n_tokens), round_seconds=time.time() - t0, step=progress.step,
                        eval_nll=evaluate(w) if cfg.training.eval_every_round else None,
                        learning_rate=float(np.mean(lrs)) if lrs else cfg.training.learning_rate)


def worker_seed(seed: int, rank: int, round_index: int | None = None) -> int:
    """A torch seed per (run seed, rank, round or set-up), hashed: `seed + rank` arithmetic collides across rounds
    and ranks."""
    stream = 0 if round_index is None else round_index + 1
    return int(np.random.SeedSequence([seed, rank, stream]).generate_state(1, np.uint64)[0])


def device_batch(w: Worker, chunk: np.ndarray, filler: int) -> dict[str, torch.Tensor]:
    """A micro-batch's rows on the device, with `real`, the positions of its real rows: -1 ids (padding) are
    filled with row `filler`, and weigh nothing."""
    batch = collate([w.store.get(int(i if i >= 0 else filler)) for i in chunk], w.pad_id)
    return to_device({**batch, "real": torch.from_numpy(np.flatnonzero(chunk >= 0))}, w.device)


def train_micro_batch(w: Worker, chunk: np.ndarray, t: dict[str, torch.Tensor], reporter: LossReporter,
                      scale: float) -> torch.Tensor:
    """Forward + backward of one micro-batch (`t`, from `device_batch`); its loss is its summed token NLL times
    `scale`. Returns (loss x target tokens, target tokens, input tokens) of its real rows, on the device (no host
    sync per micro-batch)."""
    real, real_t = np.flatnonzero(chunk >= 0), t["real"]
    with w.autocast():
        logits = w.model(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).logits
    nll, counts = response_nll(logits, t["input_ids"], t["assistant_mask"])
    weight = torch.zeros_like(counts).index_copy_(0, real_t, counts.index_select(0, real_t))
    ((nll * weight).sum() * scale).backward()
    if len(real):
        reporter.add(chunk[real], nll.index_select(0, real_t))
    return torch.stack([(nll.detach() * weight).sum(), weight.sum(),
                        t["attention_mask"].index_select(0, real_t).sum()]).double()


def optimizer_step(w: Worker, step: int) -> float:
    cfg = w.cfg
    if w.tracker is not None:
        w.tracker.add_step()  # ḡ for ΔL′: the step's gradient before clipping
    lr = cfg.training.learning_rate * cfg.training.lr_decay ** (step // cfg.training.lr_decay_every)
    for group in w.optimizer.param_groups:
        group["lr"] = lr
    if cfg.training.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(w.trainable, cfg.training.max_grad_norm)
    w.optimizer.step()
    w.optimizer.zero_grad(set_to_none=True)
    return lr


def save_round(w: Worker, progress: Progress, metrics: RoundMetrics, stats: dict[str, Any] | None,
               selection_rounds: int | None) -> None:
    """Round checkpoint every `save_every_rounds` rounds (rank 0 writes it: weights, optimizer, the selection
    journal's round count, metrics history) + report. A restart from an earlier round redoes the rounds since, and
    they come out the same: planning is deterministic given the journal, training seeded per round."""
    keep = (metrics.round + 1) % w.cfg.training.save_every_rounds == 0
    # gathered on rank 0 (a collective for FSDP)
    state = training_state(w.model, w.optimizer, w.strategy, w.rank) if keep else None
    with tempfile.TemporaryDirectory() as d:
        if w.rank == 0:
            progress.history.append(metrics)
            arms = sorted({a["arm"] for a in stats["arms"]})
            trained = [m.num_samples for m in progress.history]
            left = rounds_time_left([m.round_seconds for m in progress.history], trained,
                                    w.cfg.selection.max_rounds - metrics.round - 1,
                                    stats["budget"] * w.cfg.selection.max_uses - sum(trained))
            _log(w, f"round {metrics.round}: arm {arms} {metrics.num_samples} samples, "
                    f"loss {metrics.train_loss:.4f}, unique {stats['num_unique']}/{stats['budget']}, "
                    f"{metrics.round_seconds:.1f}s, ≤{clock(left)} left")
            if keep:
                save_training_state(Path(d), *state, selection_rounds, progress.step,
                                    progress.nll_before, progress.selection_seconds, progress.history)
        ckpt = ray.train.Checkpoint.from_directory(d) if w.rank == 0 and keep else None
        scalars = selection_scalars(stats) if w.rank == 0 else {}  # for report_to and Tune's loggers
        ray.train.report({**metrics.to_dict(), "nll_before": progress.nll_before, **scalars}, checkpoint=ckpt)


def finish(w: Worker, progress: Progress, selection_rounds: int | None) -> None:
    """Held-out NLL after training, then the final checkpoint: the model, the selection journal's round count and
    metrics history."""
    nll_after = evaluate(w)
    sharded = training_state(w.model, w.optimizer, w.strategy, w.rank) if w.strategy == "fsdp" else None
    with tempfile.TemporaryDirectory() as d:
        if w.rank == 0:
            _log(w, f"held-out NLL after training: {nll_after:.4f} (before {progress.nll_before:.4f})")
            save_final_model(Path(d), w.base, w.tokenizer, merge=w.cfg.model.merge_adapter,
                             weights=sharded[0] if sharded else None, base_path=w.model_path,
                             trust_remote_code=w.cfg.model.trust_remote_code)
            (Path(d) / "final.json").write_text(json.dumps({"nll_before": progress.nll_before,
                                                            "nll_after": nll_after,
                                                            "selection_seconds": progress.selection_seconds,
                                                            "selection_rounds": selection_rounds or 0}))
            write_history(Path(d), progress.history)
        ckpt = ray.train.Checkpoint.from_directory(d) if w.rank == 0 else None
        ray.train.report({"final": 1, "nll_before": progress.nll_before, "nll_after": nll_after,
                          "eval_nll": nll_after, "step": progress.step}, checkpoint=ckpt)


def stop(rank: int, reason: str, advice: str, trained: bool = True) -> None:
    """End the run without a model: a checkpoint holding only `stopped.json` (the driver raises its reason and
    advice, and a rerun that resumes from it stops again, with no retries in between). `trained=False`: nothing was
    trained, so the driver drops the run's checkpoints and a rerun with other settings starts afresh."""
    with tempfile.TemporaryDirectory() as d:
        if rank == 0:
            log(f"stopping: {reason}")
            (Path(d) / STOPPED).write_text(json.dumps({"reason": reason, "advice": advice, "trained": trained}))
        ckpt = ray.train.Checkpoint.from_directory(d) if rank == 0 else None
        ray.train.report({"stopped": 1}, checkpoint=ckpt)


def evaluate(w: Worker) -> float:
    """Token-weighted mean response NLL over the held-out rows, summed over workers."""
    total, tokens = 0.0, 0.0
    if len(w.eval_ids) == 0 and w.world == 1:
        return float("nan")
    w.base.eval()
    seen = 0
    for nll, counts in batch_response_nll(w.base, w.store, same_length(w, w.eval_ids), w.cfg.training.eval_batch_size,
                                          w.pad_id, w.device, w.autocast):
        keep = max(0, min(len(nll), len(w.eval_ids) - seen))  # padding rows (FSDP) count nothing
        seen += len(nll)
        total += float((nll[:keep] * counts[:keep]).sum())
        tokens += float(counts[:keep].sum())
    w.base.train()
    total, tokens = all_sum([total, tokens], w.world)
    return total / tokens if tokens else float("nan")


def rescore(w: Worker, ids: np.ndarray) -> None:
    """iterative_rescore's extra pass: this worker's share of the eligible pool, scored with the current model."""
    w.base.eval()
    parts = [nll.float().cpu().numpy() for nll, _ in
             batch_response_nll(w.base, w.store, same_length(w, ids), w.cfg.training.eval_batch_size, w.pad_id, w.device,
                                w.autocast)]
    w.base.train()
    scores = np.concatenate(parts)[: len(ids)] if parts else np.zeros(0, np.float32)
    ray.get(w.service.report_scores.remote(ids, scores))


def same_length(w: Worker, ids: np.ndarray) -> np.ndarray:
    """Under FSDP every forward pass is a collective, so every rank runs as many: this rank's ids padded with row
    0 (whose results the caller drops) to the longest rank's."""
    if w.strategy != "fsdp":
        return ids
    lengths = all_sum([float(len(ids)) if r == w.rank else 0.0 for r in range(w.world)], w.world)
    return np.concatenate([ids, np.zeros(int(max(lengths)) - len(ids), dtype=np.int64)])


def _log(w: Worker, msg: str) -> None:
    if w.rank == 0:
        log(msg)


def _report_again_if_final(checkpoint: ray.train.Checkpoint, rank: int) -> bool:
    """If the restored checkpoint is the final model (the group died after finishing) or a stop, rank 0 reports it
    again so fit() returns it (the driver reads the final selection state, or the reason, from it); True if so."""
    import shutil

    with checkpoint.as_directory() as d:
        final = Path(d) / "final.json"
        if (Path(d) / STOPPED).exists():
            metrics = {"stopped": 1}
        elif final.exists():
            metrics = json.loads(final.read_text())
            metrics = {"final": 1, **metrics, "eval_nll": metrics["nll_after"]}
        else:
            return False
        with tempfile.TemporaryDirectory() as copy:
            if rank == 0:
                shutil.copytree(d, copy, dirs_exist_ok=True)
            ckpt = ray.train.Checkpoint.from_directory(copy) if rank == 0 else None
            ray.train.report(metrics, checkpoint=ckpt)
    return True
