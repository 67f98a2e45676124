"""Benchmark of the SelectionService actor against the pure in-process LeadSelector.

For each pool size (synthetic: random iu0, 7 arms, 64 groups, budget 2.5%, sample_rate 0.015) it measures:

- `next_round` latency: the median over `--rounds` rounds, through the real actor (`start_service` on an
  enriched Parquet written to a temp dir, a local Ray via `init_ray`) and on the pure `LeadSelector`.
- update throughput, with training's payload and call pattern: every id of the round's plan is reported once as
  `report(ids, losses)` calls of `--batch` ids (64, the reporter's smallest report; float32 losses as the training
  loop sends them), from `--workers` simulated workers that each keep at most one call in flight (as the loop
  does), followed by `end_round` with a `--g-size` float32 ḡ and u (the CountSketch size), which writes the round's
  record into the selection journal (persistence on). The figure is ids reported per second of wall time (the
  reports plus end_round); the pure selector doing the same calls in process, with the same journal write, is the
  baseline. `end_round` (with its journal write) and a resume (`restore`: the journal read and replayed, what a
  restarted service does) are timed on their own.
- the actor process's peak RSS (VmHWM), read from /proc via psutil's pid.

Targets: >= 5M ids/s of updates through the actor, and next_round <= 1 s at 10M samples.
The last line is `update_ids_per_s=<n at the largest size> next_round_s_at_10M=<s>` (n/a when 10M is not run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import ray  # noqa: E402

from lead_ray.config import LeadConfig, TrainingArgs  # noqa: E402
from lead_ray.runtime.ray_init import init_ray  # noqa: E402
from lead_ray.select.journal import SelectionJournal  # noqa: E402
from lead_ray.select.lead import LeadSelector  # noqa: E402
from lead_ray.select.service import start_service  # noqa: E402
from lead_ray.train.reporter import REPORT_MIN_BATCH  # noqa: E402

NUM_ARMS, NUM_GROUPS = 7, 64


def make_pool(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"id": np.arange(n, dtype=np.int64), "arm": rng.integers(0, NUM_ARMS, n, dtype=np.int64),
            "group": rng.integers(0, NUM_GROUPS, n, dtype=np.int64), "iu0": rng.gamma(2.0, 1.0, n)}


def selector_params(n: int, rounds: int) -> dict[str, Any]:
    return {"num_arms": NUM_ARMS, "gamma": 0.1, "smoothing": 0.1, "sample_rate": 0.015, "max_uses": 4,
            "budget": int(0.025 * n), "max_rounds": rounds + 100, "seed": 0}


def report_chunks(plan_ids: np.ndarray, batch: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The round's ids, shuffled (workers finish rows in any order), as (ids, float32 losses) chunks; built outside
    the timings."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(plan_ids)
    n = len(ids)
    losses = rng.random(n, dtype=np.float32) * 4
    return [(ids[s : s + batch], losses[s : s + batch]) for s in range(0, n, batch)]


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except Exception:
        return None


def bench_pure(pool: dict[str, np.ndarray], rounds: int, batch: int, g: np.ndarray, journal: str
               ) -> tuple[list[float], list[float]]:
    sel = LeadSelector(pool["iu0"], pool["arm"], pool["group"], **selector_params(len(pool["id"]), rounds))
    book = SelectionJournal(journal)
    next_s, update_rate = [], []
    for r in range(rounds):
        t0 = time.perf_counter()
        plan = sel.next_round()
        next_s.append(time.perf_counter() - t0)
        assert plan is not None, sel.stop_reason
        chunks = report_chunks(plan.ids, batch, seed=r)
        t0 = time.perf_counter()
        for ids, losses in chunks:
            sel.report(ids, losses)
        sel.end_round(g, -1e-5 * g)
        book.write(sel.round_record())
        update_rate.append(len(plan.ids) / (time.perf_counter() - t0))
    return next_s, update_rate


def bench_actor(path: str, n: int, rounds: int, batch: int, g: np.ndarray, workers: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    journal = str(Path(path).parent / "selection")
    service = start_service(path, selector_params(n, rounds), journal)
    pid = ray.get(service.__ray_call__.remote(lambda self: os.getpid()))
    startup = time.perf_counter() - t0
    next_s, update_rate, end_s = [], [], []
    try:
        for r in range(rounds):
            t0 = time.perf_counter()
            plan = ray.get(service.next_round.remote())
            next_s.append(time.perf_counter() - t0)
            assert plan is not None
            chunks = report_chunks(plan.ids, batch, seed=r)
            t0 = time.perf_counter()
            pending: list[ray.ObjectRef | None] = [None] * workers
            for i, (ids, losses) in enumerate(chunks):
                w = i % workers
                if pending[w] is not None:
                    ray.get(pending[w])  # at most one report in flight per worker
                pending[w] = service.report.remote(ids, losses)
            ray.get([p for p in pending if p is not None])  # the flush
            t1 = time.perf_counter()
            ray.get(service.end_round.remote(g, -1e-5 * g, plan.round))  # + the round's journal write
            end_s.append(time.perf_counter() - t1)
            update_rate.append(len(plan.ids) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        assert ray.get(service.restore.remote(rounds)) == rounds  # what a restarted service does
        resume_s = time.perf_counter() - t0
        rss = peak_rss_mb(pid)
        record_mb = statistics.mean(p.stat().st_size for p in Path(journal).iterdir()) / 1e6
    finally:
        ray.kill(service)
    return {"next": next_s, "update": update_rate, "end": end_s, "startup": startup, "rss": rss,
            "resume": resume_s, "record_mb": record_mb, "plan": len(plan.ids)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--rounds", type=int, default=3, help="rounds measured per size (medians reported)")
    ap.add_argument("--batch", type=int, default=REPORT_MIN_BATCH, help="ids per report() call")
    ap.add_argument("--workers", type=int, default=2, help="simulated workers, one report in flight each")
    ap.add_argument("--g-size", type=int, default=TrainingArgs.loss_change_sketch_dim,
                    help="length of ḡ and u sent to end_round (the CountSketch size)")
    args = ap.parse_args()

    init_ray(LeadConfig.from_flat(num_cpus=4))
    g = np.random.default_rng(1).standard_normal(args.g_size).astype(np.float32)
    rows = []
    for n in args.sizes:
        pool = make_pool(n)
        with tempfile.TemporaryDirectory() as d:
            p_next, p_upd = bench_pure(pool, args.rounds, args.batch, g, str(Path(d) / "pure"))
            path = str(Path(d) / "enriched.parquet")
            pq.write_table(pa.table(pool), path)
            del pool
            a = bench_actor(path, n, args.rounds, args.batch, g, args.workers)
        row = {"n": n, "a_next": statistics.median(a["next"]), "p_next": statistics.median(p_next),
               "a_upd": statistics.median(a["update"]), "p_upd": statistics.median(p_upd),
               "startup": a["startup"], "rss": a["rss"]}
        rows.append(row)
        print(f"[bench] n={n:,}: actor next_round {[round(x, 3) for x in a['next']]} s, "
              f"updates {[f'{x / 1e6:.2f}M' for x in a['update']]} ids/s over {a['plan']:,}-id rounds, "
              f"end_round + journal write {statistics.median(a['end']):.3f} s ({a['record_mb']:.2f} MB a round), "
              f"resume from the journal {a['resume']:.2f} s", flush=True)

    print()
    header = (f"{'pool':>11} | {'next_round actor':>16} {'pure':>8} {'ratio':>6} | {'update actor':>13} "
              f"{'pure':>9} {'ratio':>6} | {'startup':>8} {'actor peak RSS':>14}")
    print(header)
    print("-" * len(header))
    for r in rows:
        rss = f"{r['rss']:.0f} MiB" if r["rss"] is not None else "n/a"
        print(f"{r['n']:>11,} | {r['a_next']:>14.3f} s {r['p_next']:>6.3f} s {r['a_next'] / r['p_next']:>6.2f} | "
              f"{r['a_upd'] / 1e6:>7.2f}M id/s {r['p_upd'] / 1e6:>7.2f}M {r['a_upd'] / r['p_upd']:>6.2f} | "
              f"{r['startup']:>6.2f} s {rss:>14}")
    print(f"targets: update >= 5M ids/s through the actor; next_round <= 1 s at 10M "
          f"(rounds={args.rounds}, batch={args.batch}, workers={args.workers})")
    at_10m = next((r["a_next"] for r in rows if r["n"] == 10_000_000), None)
    largest = max(rows, key=lambda r: r["n"])
    print(f"update_ids_per_s={int(largest['a_upd'])} "
          f"next_round_s_at_10M={'n/a' if at_10m is None else f'{at_10m:.3f}'}")


if __name__ == "__main__":
    main()
