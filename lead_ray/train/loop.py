"""train_loop_per_worker: one long fit; each round asks the SelectionService what to train on.

The per-sample losses that feed IDU come from the training forward pass itself (no extra inference).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from lead_ray.config import LeadConfig
from lead_ray.data.store import RowStore
from lead_ray.models.nll import batch_response_nll, collate, response_nll
from lead_ray.train.direction import RoundDirectionTracker, direction_parameters
from lead_ray.train.reporter import LossReporter


def _broadcast(obj: Any, world: int) -> Any:
    if world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _gather(obj: Any, world: int) -> list[Any]:
    if world == 1:
        return [obj]
    box: list[Any] = [None] * world
    dist.all_gather_object(box, obj)
    return box


def _end_round(service, reporter: LossReporter, rank: int, world: int, args: tuple | None) -> dict | None:
    """Rank 0 ends the round once the service holds every loss of it: a service that restarted after a worker's
    last report answers None, and every worker sends the round's losses again. Rank 0 gets the stats."""
    while True:
        reporter.flush()
        tokens = _gather(reporter.incarnation, world)
        stats = ray.get(service.end_round.remote(*args, tokens)) if rank == 0 else None
        if _broadcast(stats is not None if rank == 0 else None, world):
            return stats
        reporter.resend()


def _all_sum(values: list[float], world: int) -> list[float]:
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def evaluate(model, store: RowStore, ids: np.ndarray, batch_size: int, pad_id: int, device, autocast) -> float:
    """Token-weighted mean response NLL over this worker's share of the held-out rows, summed over workers."""
    world = ray.train.get_context().get_world_size()
    total, tokens = 0.0, 0.0
    if len(ids) == 0 and world == 1:
        return float("nan")
    model.eval()
    for nll, counts in batch_response_nll(model, store, ids, batch_size, pad_id, device, autocast):
        total += float((nll * counts).sum())
        tokens += float(counts.sum())
    model.train()
    total, tokens = _all_sum([total, tokens], world)
    return total / tokens if tokens else float("nan")


def rescore(service, model, store: RowStore, ids: np.ndarray, batch_size: int, pad_id: int, device,
            autocast) -> None:
    """iterative_rescore's extra pass: this worker's share of the eligible pool, scored with the current model."""
    model.eval()
    parts = [nll.float().cpu().numpy()
             for nll, _ in batch_response_nll(model, store, ids, batch_size, pad_id, device, autocast)]
    model.train()
    ray.get(service.report_scores.remote(ids, np.concatenate(parts) if parts else np.zeros(0, np.float32)))


def train_loop_per_worker(config: dict[str, Any]) -> None:
    cfg = LeadConfig(**config["cfg"])
    service, model_path, pool_dir = config["service"], config["model_path"], Path(config["pool_dir"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed + rank)
    if not torch.cuda.is_available():  # Ray pins OMP threads to 1 CPU per worker; use this node's share
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ctx.get_local_world_size()))
    device = ray.train.torch.get_device()
    use_bf16 = cfg.bf16 if cfg.bf16 is not None else (cfg.use_gpu and torch.cuda.is_available())

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(use_bf16))

    from lead_ray.models.load import load_model, load_tokenizer

    tokenizer = load_tokenizer(model_path, cfg.trust_remote_code)
    lora = {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout} if cfg.use_lora else None
    base = load_model(model_path, trust_remote_code=cfg.trust_remote_code, lora=lora)
    num_layers = base.config.num_hidden_layers
    model = ray.train.torch.prepare_model(base)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    which = cfg.loss_change_params if cfg.loss_change_params != "auto" else "all" if cfg.use_lora else "last_block"
    tracker = RoundDirectionTracker(direction_parameters(base, which, num_layers), cfg.loss_change_sketch_dim,
                                    cfg.seed) if rank == 0 else None
    store = RowStore(pool_dir / "pool.arrow")
    eval_ids = np.asarray(config["eval_ids"], dtype=np.int64)[: cfg.eval_max_samples][rank::world]
    pad_id = tokenizer.pad_token_id

    step, nll_before = 0, None
    selection_seconds = 0.0  # what the loop waits on selection: service calls and any re-scoring pass
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None and _report_again_if_final(checkpoint, service if rank == 0 else None):
        return  # the group died after the run had finished: nothing left to train
    if checkpoint is None and rank == 0:
        ray.get(service.reset.remote())  # no checkpoint: the model starts from the base, so must selection
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            from lead_ray.train.checkpoint import load_training_state

            step, nll_before, selection_seconds = load_training_state(Path(d), base, optimizer,
                                                                      service if rank == 0 else None)
        if rank == 0:
            print(f"[lead-ray] resumed from checkpoint at optimizer step {step}", flush=True)
    if nll_before is None:
        nll_before = evaluate(base, store, eval_ids, cfg.eval_batch_size, pad_id, device, autocast)
        if rank == 0:
            print(f"[lead-ray] held-out NLL before training: {nll_before:.4f}", flush=True)

    micro = cfg.per_device_train_batch_size
    reporter = LossReporter(service)
    while True:
        t_select = time.time()
        plan = _broadcast(ray.get(service.next_round.remote()) if rank == 0 else None, world)
        if plan is not None and "rescore" in plan:
            rescore(service, base, store, plan["rescore"][rank::world], cfg.eval_batch_size, pad_id, device,
                    autocast)
            _all_sum([0.0], world)  # a barrier: every worker's scores are in before rank 0 asks again
        selection_seconds += time.time() - t_select
        if plan is None:
            break
        if "rescore" in plan:
            continue
        t0 = time.time()
        torch.manual_seed(cfg.seed + 1000 * int(plan["round"]) + rank)  # dropout etc.: the same after a restart
        # the round's rows in a seeded order, as a data loader shuffles (the same order again after a restart)
        ids = plan["ids"][np.random.default_rng([cfg.seed, int(plan["round"])]).permutation(len(plan["ids"]))]
        padded = np.concatenate([ids, np.full(-len(ids) % (micro * world), -1, dtype=np.int64)])
        mine = padded[rank::world]
        if tracker is not None:
            tracker.start_round()
        reporter.start_round()
        lrs, losses_sum, tokens_sum, n_micro, n_tokens = [], 0.0, 0.0, 0, 0
        model.train()
        for s in range(0, len(mine), micro):
            chunk = mine[s : s + micro]
            real = chunk >= 0
            rows = [store.get(int(i if i >= 0 else ids[0])) for i in chunk]
            t = {k: v.to(device) for k, v in collate(rows, pad_id).items()}
            with autocast():
                logits = model(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).logits
            nll, counts = response_nll(logits, t["input_ids"], t["assistant_mask"])
            weight = counts * torch.from_numpy(real).to(device)
            loss = (nll * weight).sum() / weight.sum().clamp_min(1.0)
            (loss / cfg.gradient_accumulation_steps).backward()
            n_micro += 1
            if n_micro % cfg.gradient_accumulation_steps == 0:
                lrs.append(_optimizer_step(cfg, model, optimizer, trainable, step, tracker))
                step += 1
            if real.any():
                reporter.add(chunk[real], nll[torch.from_numpy(real).to(device)])
            losses_sum += float((nll.detach() * weight).sum())
            n_tokens += int(t["attention_mask"][torch.from_numpy(real).to(device)].sum())
            tokens_sum += float(weight.sum())
        if n_micro % cfg.gradient_accumulation_steps:
            lrs.append(_optimizer_step(cfg, model, optimizer, trainable, step, tracker))
            step += 1
        reporter.flush()
        losses_sum, tokens_sum, n_tokens = _all_sum([losses_sum, tokens_sum, n_tokens], world)  # a barrier too
        metrics = {"round": int(plan["round"]), "train_loss": losses_sum / max(tokens_sum, 1.0),
                   "num_samples": len(ids), "num_tokens": int(n_tokens), "round_seconds": time.time() - t0,
                   "step": step}
        if cfg.eval_every_round:
            metrics["eval_nll"] = evaluate(base, store, eval_ids, cfg.eval_batch_size, pad_id, device, autocast)
        metrics["learning_rate"] = float(np.mean(lrs)) if lrs else cfg.learning_rate
        t_select = time.time()
        metrics["selection_seconds"] = selection_seconds  # cumulative, up to this round's plan
        stats = _end_round(service, reporter, rank, world,
                           (*tracker.end_round(), dict(metrics)) if rank == 0 else None)
        selection_seconds += time.time() - t_select
        with tempfile.TemporaryDirectory() as d:
            if rank == 0:
                print(f"[lead-ray] round {plan['round']}: arm {sorted(set(plan['arms'].tolist()))} "
                      f"{len(ids)} samples, loss {metrics['train_loss']:.4f}, unique {stats['num_unique']}/"
                      f"{stats['budget']}, {metrics['round_seconds']:.1f}s", flush=True)
                from lead_ray.train.checkpoint import save_training_state

                save_training_state(Path(d), base, optimizer, ray.get(service.snapshot.remote()), step, nll_before,
                                    selection_seconds)
            ckpt = ray.train.Checkpoint.from_directory(d) if rank == 0 else None
            ray.train.report({**metrics, "nll_before": nll_before}, checkpoint=ckpt)

    nll_after = evaluate(base, store, eval_ids, cfg.eval_batch_size, pad_id, device, autocast)
    with tempfile.TemporaryDirectory() as d:
        if rank == 0:
            print(f"[lead-ray] held-out NLL after training: {nll_after:.4f} (before {nll_before:.4f})", flush=True)
            from lead_ray.train.checkpoint import save_final_model, write_snapshot

            save_final_model(Path(d), base, tokenizer, merge=cfg.merge_adapter)
            write_snapshot(Path(d) / "selection", ray.get(service.snapshot.remote()))
            (Path(d) / "final.json").write_text(json.dumps({"nll_before": nll_before, "nll_after": nll_after,
                                                            "selection_seconds": selection_seconds}))
        ckpt = ray.train.Checkpoint.from_directory(d) if rank == 0 else None
        ray.train.report({"final": 1, "nll_before": nll_before, "nll_after": nll_after, "eval_nll": nll_after,
                          "step": step},
                         checkpoint=ckpt)


def _report_again_if_final(checkpoint: ray.train.Checkpoint, service) -> bool:
    """If the restored checkpoint is the final model (the group died after finishing), restore the selection
    state (rank 0 passes the service) and report the checkpoint again so fit() returns it; True if so."""
    import shutil

    with checkpoint.as_directory() as d:
        final = Path(d) / "final.json"
        if not final.exists():
            return False
        metrics = json.loads(final.read_text())
        if service is not None:
            ray.get(service.restore.remote({p.name: p.read_bytes() for p in (Path(d) / "selection").iterdir()}))
        with tempfile.TemporaryDirectory() as copy:
            if service is not None:
                shutil.copytree(d, copy, dirs_exist_ok=True)
            ckpt = ray.train.Checkpoint.from_directory(copy) if service is not None else None
            ray.train.report({"final": 1, **metrics, "eval_nll": metrics["nll_after"]}, checkpoint=ckpt)
    return True


def _optimizer_step(cfg: LeadConfig, model, optimizer, trainable, step: int,
                    tracker: RoundDirectionTracker | None) -> float:
    if tracker is not None:
        tracker.add_step()  # ḡ for ΔL′: the step's gradient before clipping
    lr = cfg.learning_rate * cfg.lr_decay ** (step // cfg.lr_decay_every)
    for group in optimizer.param_groups:
        group["lr"] = lr
    if cfg.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return lr
