"""Per-step cost of LEAD's training step against a plain SFT step: same batches, same process, CPU.

Two identical copies of `builtin:tiny` (full fine-tuning, AdamW) train on the same batches of real demo-pool
rows (normalised, chat-templated and tokenized with the tiny tokenizer, collated with `collate`).

- plain step: `model(input_ids, attention_mask, labels=<-100 outside assistant tokens>).loss.backward()`,
  `opt.step()`, `opt.zero_grad()`.
- LEAD step: logits → `response_nll` → token-weighted loss → backward → ḡ accumulated for ΔL′
  (`RoundDirectionTracker.add_step`, last block, as full fine-tuning does) → step → zero_grad, then the per-sample
  losses go to a real SelectionService actor through the training loop's `LossReporter` (paced, at most one call
  in flight).
- A LEAD block is one round, with every per-round cost the loop pays: `next_round` before it; after it the flush,
  ḡ and u (CountSketch), and `end_round`, which writes the round's record into the selection journal.

After warm-up, plain and LEAD blocks alternate (the order flips every pair). The headline is the mean step: each
variant's wall time over all its blocks (per-round costs included) over its steps. The medians of the per-step
times are printed too (the step alone); alternating blocks cancels most drift on a noisy machine. Torch runs on `--threads` (default 1)
intra-op threads: on a small box where Ray's processes (or anything else) take a core now and then, a 2-thread
step stalls in OpenMP barriers (20 ms steps become 2 s), which swamps the difference being measured.
Target: ratio <= 1.05 (limit 1.00, i.e. no measurable overhead). The last line is
`lead_step_over_plain_step=<ratio of mean steps>`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402

from lead_ray.config import DEMO_DATA, LeadConfig, TrainingArgs  # noqa: E402
from lead_ray.data.formats import BadRow, normalize  # noqa: E402
from lead_ray.data.tokenize import tokenize_messages  # noqa: E402
from lead_ray.models.load import load_model, load_tokenizer, resolve_model_path  # noqa: E402
from lead_ray.models.nll import collate, response_nll  # noqa: E402
from lead_ray.runtime.ray_init import init_ray  # noqa: E402
from lead_ray.select.service import start_service  # noqa: E402
from lead_ray.train.direction import RoundDirectionTracker, direction_parameters  # noqa: E402
from lead_ray.train.reporter import LossReporter  # noqa: E402


def load_rows(tokenizer, num_rows: int, max_length: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`num_rows` valid demo rows (shuffled across files) as (input_ids, assistant_mask)."""
    raw = []
    for path in sorted(DEMO_DATA.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                raw.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    rng = np.random.default_rng(seed)
    rows = []
    for i in rng.permutation(len(raw)):
        try:
            rows.append(tokenize_messages(tokenizer, normalize(raw[i]), max_length))
        except BadRow:
            continue
        if len(rows) == num_rows:
            break
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=192)
    ap.add_argument("--warmup", type=int, default=5, help="warm-up steps for each of plain and LEAD")
    ap.add_argument("--blocks", type=int, default=10, help="measured blocks for each of plain and LEAD")
    ap.add_argument("--block-steps", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    args = ap.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model_path = resolve_model_path("builtin:tiny", Path("~/.cache/lead-ray").expanduser())
    tokenizer = load_tokenizer(model_path)
    pad_id = tokenizer.pad_token_id
    rows = load_rows(tokenizer, args.rows, args.max_length, args.seed)
    batches = []
    for s in range(0, len(rows) - args.batch_size + 1, args.batch_size):
        t = collate(rows[s : s + args.batch_size], pad_id)
        t["labels"] = torch.where(t["assistant_mask"], t["input_ids"], torch.full_like(t["input_ids"], -100))
        t["ids"] = np.arange(s, s + args.batch_size, dtype=np.int64)  # row ids in the enriched Parquet below
        batches.append(t)
    widths = [b["input_ids"].shape[1] for b in batches]
    print(f"[bench] {len(rows)} rows, {len(batches)} batches of {args.batch_size}, "
          f"padded width median {int(np.median(widths))} (max {max(widths)}), torch threads {torch.get_num_threads()}")

    plain_model = load_model(model_path)
    lead_model = load_model(model_path)
    lead_model.load_state_dict(plain_model.state_dict())
    plain_model.train()
    lead_model.train()
    plain_opt = torch.optim.AdamW(plain_model.parameters(), lr=args.lr)
    lead_opt = torch.optim.AdamW(lead_model.parameters(), lr=args.lr)

    init_ray(LeadConfig.from_flat(num_cpus=4))
    tmp = tempfile.TemporaryDirectory()
    enriched = str(Path(tmp.name) / "enriched.parquet")
    n = len(rows)
    rng = np.random.default_rng(args.seed)
    pq.write_table(pa.table({"id": np.arange(n, dtype=np.int64), "arm": rng.integers(0, 7, n, dtype=np.int64),
                             "group": rng.integers(0, 4, n, dtype=np.int64), "iu0": rng.random(n)}), enriched)
    params = {"num_arms": 7, "budget": n, "max_uses": 10_000, "max_rounds": 10_000, "reuse_after_budget": True}
    service = start_service(enriched, params, str(Path(tmp.name) / "selection"))
    reporter = LossReporter(service)
    reporter.restore(None)  # the actor is up before any timing
    tracker = RoundDirectionTracker(direction_parameters(lead_model, "last_block", lead_model.config.num_hidden_layers),
                                    TrainingArgs.loss_change_sketch_dim)

    def plain_step(b: dict) -> float:
        t0 = time.perf_counter()
        plain_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss.backward()
        plain_opt.step()
        plain_opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    def lead_step(b: dict) -> float:
        t0 = time.perf_counter()
        logits = lead_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        nll, counts = response_nll(logits, b["input_ids"], b["assistant_mask"])
        loss = (nll * counts).sum() / counts.sum().clamp_min(1.0)
        loss.backward()
        tracker.add_step()  # ḡ for ΔL′
        lead_opt.step()
        lead_opt.zero_grad(set_to_none=True)
        reporter.add(b["ids"], nll)  # the training loop's own reporter: batched, async, <= 1 call in flight
        return time.perf_counter() - t0

    def plain_block(start: int, steps: int) -> list[float]:
        return [plain_step(batches[(start + i) % len(batches)]) for i in range(steps)]

    def lead_block(start: int, steps: int) -> list[float]:
        """One round, as train/loop.py runs it on rank 0 of one worker."""
        plan = reporter.next_round()
        reporter.start_round()
        tracker.start_round()
        out = [lead_step(batches[(start + i) % len(batches)]) for i in range(steps)]
        reporter.end_round(0, 1, *tracker.end_round(), int(plan.round))  # flush, ḡ and u, end_round + journal
        return out

    plain_block(0, args.warmup)
    lead_block(0, args.warmup)
    plain_t: list[float] = []
    lead_t: list[float] = []
    wall = {"plain": 0.0, "lead": 0.0}
    for k in range(args.blocks):
        start = args.warmup + k * args.block_steps  # both variants train on the same batches in block k
        order = [("plain", plain_block, plain_t), ("lead", lead_block, lead_t)]
        for name, run, out in order if k % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            out.extend(run(start, args.block_steps))
            wall[name] += time.perf_counter() - t0
    ray.kill(service)
    tmp.cleanup()

    plain_mean, lead_mean = wall["plain"] / len(plain_t), wall["lead"] / len(lead_t)
    ratio = lead_mean / plain_mean
    print()
    print(f"{'step':>6} | {'median ms':>9} | {'mean ms':>8} | {'p10 ms':>7} | {'p90 ms':>7} | steps")
    for name, ts in (("plain", plain_t), ("lead", lead_t)):
        q = np.quantile(ts, [0.1, 0.9]) * 1e3
        print(f"{name:>6} | {statistics.median(ts) * 1e3:>9.2f} | {statistics.mean(ts) * 1e3:>8.2f} | "
              f"{q[0]:>7.2f} | {q[1]:>7.2f} | {len(ts)}")
    paired = statistics.median(a / b for a, b in zip(lead_t, plain_t, strict=True))
    print(f"median of per-batch ratios (same batch, same block position, the step alone): {paired:.3f}")
    print(f"mean step with every per-round cost (block wall time over steps): plain {plain_mean * 1e3:.2f} ms, "
          f"lead {lead_mean * 1e3:.2f} ms; per-round costs {(wall['lead'] - sum(lead_t)) / args.blocks * 1e3:.1f} ms "
          f"a round of {args.block_steps} steps")
    print(f"target: lead/plain <= 1.05 (limit 1.00); blocks={args.blocks} x {args.block_steps} steps, "
          f"warm-up {args.warmup}")
    print(f"lead_step_over_plain_step={ratio:.3f}")


if __name__ == "__main__":
    main()
