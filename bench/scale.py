"""The central SelectionService under many training workers, and the round's fixed costs at large pools (issue 15).

Part 1, the actor under load. A fake cluster on this machine (`ray.cluster_utils.Cluster`): a head that holds the
real `SelectionService` (persistence on: its selection journal in a temp folder) and `--nodes` worker nodes with a
custom `sim_gpu` resource. W simulated workers run as coroutines in `--groups` async actors on those nodes, each as
train/reporter.py does it: steps of `t_step` seconds (sleeps, `--round-seconds` of them a round), `--rows-per-step`
per-sample losses per step, a report once 64 are buffered and `report_interval(W)` seconds have passed since the
last (the first of a round offset by the worker's phase, rank / W), at most one report in flight, a flush at the
round's end; then the gather (all groups done) and rank 0's calls: `end_round` (with a `--grad-size` float32 ḡ and
u: the CountSketch size), which writes the round's record into the journal, the round count written into a
checkpoint file, and `next_round`. The baseline, measured in the same run, is the unpaced pattern (a report per 64
losses, no phase) at the largest W. Figures per (W, t_step):
- the actor's busy share: its process CPU seconds over wall seconds, from /proc;
- mid-round report latency, p50 and p99, from the call to its answer as the worker sees it; the round-end flush's
  p99 on its own (every worker flushes at once, once a round);
- blocked share: the time workers wait on an earlier report before sending, over their step time;
- rank 0's seconds per round at the gather (end_round with the journal write + checkpoint + next_round); the
  journal's bytes per round; the actor's peak RSS.

Part 2, the round's fixed costs at 1M, 10M and 100M (`--pools`) rows, 40 rounds of a synthetic pool (budget 10%)
on the pure in-process selector and its journal (no Ray: the floor under part 1): next_round, every round id
reported in one call, end_round and the round's journal write; bytes per round; the selector's per-row state
(`state_nbytes`, issue 28's target is <= 25 bytes); the share of a round of the
measured size on `--ref-workers` workers at `--ref-t-step` s per step; a resume (every record read and replayed);
and, as the baseline, writing the whole state once (what every round wrote before the journal).

Targets (issue 15): at W=1,024 and t_step=25 ms, actor busy < 50%, report p99 < t_step, blocked < 1% of step time;
selection + checkpoint <= 10% of round time at 10M rows. This machine has 2 cores for the whole fake cluster, the
actor and every simulated worker: the figures are an upper bound on what one node's actor costs.
The last line is `actor_busy_at_1024=<share> blocked_share_at_1024=<share> round_overhead_at_10M=<share>`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import ray  # noqa: E402
from service import make_pool, peak_rss_mb, selector_params  # noqa: E402

from lead_ray.config import TrainingArgs  # noqa: E402
from lead_ray.select.journal import SelectionJournal  # noqa: E402
from lead_ray.select.lead import LeadSelector  # noqa: E402
from lead_ray.select.service import start_service  # noqa: E402
from lead_ray.train.reporter import REPORT_MIN_BATCH, report_interval  # noqa: E402


@ray.remote(num_cpus=0)
class WorkerGroup:
    """Simulated training workers, one coroutine each, reporting to the service as train/reporter.py does."""

    def __init__(self, service, t_step: float, rows_per_step: int, min_batch: int, min_seconds: float) -> None:
        self.service, self.t_step, self.rows_per_step = service, t_step, rows_per_step
        self.min_batch, self.min_seconds = min_batch, min_seconds

    async def run_round(self, ids: list[np.ndarray], phases: list[float], steps: int) -> dict[str, list[float]]:
        latencies: list[float] = []
        flushes: list[float] = []
        blocked: list[float] = []
        r = self.rows_per_step

        async def call(chunk: np.ndarray, out: list[float]) -> None:
            sent = time.perf_counter()
            await self.service.report.remote(chunk, np.ones(len(chunk), dtype=np.float32))
            out.append(time.perf_counter() - sent)

        # Between two reports a training worker only steps, so a simulated one sleeps through those steps at once:
        # one wake-up per report, not per step, keeps this 2-core machine's event loops out of the latency.
        batch_steps = -(-self.min_batch // r)
        per_report = max(batch_steps, math.ceil(self.min_seconds / self.t_step - 1e-9))

        async def worker(mine: np.ndarray, phase: float) -> None:
            pending, done, waited = None, 0, 0.0
            due = max(batch_steps, math.ceil((1 - phase) * self.min_seconds / self.t_step - 1e-9))  # the reporter
            while due < steps:
                await asyncio.sleep((due - done) * self.t_step)
                chunk, done = mine[done * r : due * r], due
                t0 = time.perf_counter()
                if pending is not None:
                    await pending  # at most one report in flight
                waited += time.perf_counter() - t0
                pending = asyncio.ensure_future(call(chunk, latencies))
                due = done + per_report
            await asyncio.sleep((steps - done) * self.t_step)
            if pending is not None:
                await pending
            await call(mine[done * r : steps * r], flushes)  # the flush at the round's end
            blocked.append(waited)

        await asyncio.gather(*(worker(m, p) for m, p in zip(ids, phases)))
        return {"latency": latencies, "flush": flushes, "blocked": blocked}


def actor_under_load(workers: int, t_step: float, min_seconds: float, args, path: str, n: int,
                     g: np.ndarray) -> dict[str, float]:
    ckpt = tempfile.mkdtemp(prefix="scale-ckpt-")
    service = start_service(path, selector_params(n, args.rounds + 1), str(Path(ckpt, "selection")))
    pid = ray.get(service.__ray_call__.remote(lambda self: os.getpid()))
    per_group = -(-workers // args.groups)
    groups = [WorkerGroup.options(resources={"sim_gpu": per_group}).remote(
        service, t_step, args.rows_per_step, REPORT_MIN_BATCH, min_seconds) for _ in range(args.groups)]
    steps = round(args.round_seconds / t_step)
    latency, flush, blocked, rank0, state_bytes = [], [], [], [], 0
    phases = np.arange(workers) / workers  # the loop's LossReporter(phase=rank / world)
    cpu0, wall0 = _cpu_seconds(pid), time.perf_counter()
    try:
        for _ in range(args.rounds):
            plan = ray.get(service.next_round.remote())
            ids = np.array_split(np.resize(plan.ids, workers * steps * args.rows_per_step), workers)
            mine = [slice(i * per_group, (i + 1) * per_group) for i in range(len(groups))]
            out = ray.get([grp.run_round.remote(ids[m], phases[m].tolist(), steps)
                           for grp, m in zip(groups, mine)])  # the gather: every worker flushed
            for o in out:
                latency += o["latency"]
                flush += o["flush"]
                blocked += o["blocked"]
            t0 = time.perf_counter()
            answer = ray.get(service.end_round.remote(g, -1e-5 * g, plan.round))  # writes the round's record
            Path(ckpt, "train_state.json").write_text(json.dumps({"selection_rounds": answer.rounds}))
            state_bytes = Path(ckpt, "selection", SelectionJournal.name(plan.round)).stat().st_size
            rank0.append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(ckpt)
    wall = time.perf_counter() - wall0
    busy = (_cpu_seconds(pid) - cpu0) / wall
    rss = peak_rss_mb(pid)
    for grp in groups:
        ray.kill(grp)
    ray.kill(service)
    lat = np.asarray(latency)
    return {"workers": workers, "t_step": t_step, "busy": busy, "p50": float(np.percentile(lat, 50)),
            "p99": float(np.percentile(lat, 99)), "flush_p99": float(np.percentile(flush, 99)), "blocked": float(np.sum(blocked)) / (workers * steps * t_step
                                                                                     * args.rounds),
            "rank0_s": float(np.mean(rank0)), "reports": len(lat) + len(flush), "wall_s": wall, "rss_mb": rss or float("nan"),
            "state_mb": state_bytes / 1e6}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def round_costs(n: int, rounds: int, g: np.ndarray) -> dict[str, float]:
    """Part 2: the pure selector's per-round work and the journal write, at `n` rows; then a resume (every record
    read and replayed), and, as the baseline, what writing the whole state once would cost (idu, uses, the log)."""
    pool = make_pool(n)
    params = {**selector_params(n, rounds), "budget": n // 10, "max_rounds": rounds}  # the budget outlasts 40 rounds
    sel = LeadSelector(pool["iu0"], pool["arm"], pool["group"], **params)
    seconds, written, planned = [], [], []
    with tempfile.TemporaryDirectory() as d:
        journal = SelectionJournal(d)
        for _ in range(rounds):
            t0 = time.perf_counter()
            plan = sel.next_round()
            if plan is None:
                break
            sel.report(plan.ids, np.ones(len(plan.ids), dtype=np.float32))
            sel.end_round(g, -1e-5 * g)
            written.append(journal.write(sel.round_record()))
            seconds.append(time.perf_counter() - t0)
            planned.append(len(plan.ids))
        t0 = time.perf_counter()
        resumed = LeadSelector(pool["iu0"], pool["arm"], pool["group"], **params)
        built = time.perf_counter() - t0
        resumed.load_rounds(journal.read(sel.round))
        resume_s = time.perf_counter() - t0 - built
        assert np.array_equal(resumed.uses, sel.uses) and np.array_equal(resumed.idu, sel.idu)
        del pool, resumed
        t0 = time.perf_counter()
        with open(Path(d, "whole.npz"), "wb") as f:  # the baseline: the whole state, once
            np.savez(f, idu=sel.idu, uses=sel.uses, **sel.selections())
        whole_s, whole_bytes = time.perf_counter() - t0, Path(d, "whole.npz").stat().st_size
    return {"n": n, "round_s": float(np.mean(seconds)), "max_s": float(np.max(seconds)),
            "state_mb": float(np.mean(written)) / 1e6, "rounds": len(seconds), "rows_per_round": int(np.mean(planned)),
            "resume_s": resume_s, "build_s": built, "whole_s": whole_s, "whole_mb": whole_bytes / 1e6,
            "bytes_per_row": sel.state_nbytes() / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--t-steps", type=float, nargs="+", default=[0.025, 0.2])
    ap.add_argument("--pool", type=int, default=1_000_000, help="pool rows behind the actor in part 1")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per (W, t_step) in part 1")
    ap.add_argument("--round-seconds", type=float, default=10.0, help="training time per round in part 1")
    ap.add_argument("--rows-per-step", type=int, default=8, help="rows per worker per step (a report per 64)")
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--groups", type=int, default=8, help="async actors holding the simulated workers")
    ap.add_argument("--grad-size", type=int, default=TrainingArgs.loss_change_sketch_dim,
                    help="floats in ḡ and u (the CountSketch size, loss_change_sketch_dim)")
    ap.add_argument("--no-baseline", dest="baseline", action="store_false",
                    help="skip the unpaced run (a report per 64 losses) at the largest W")
    ap.add_argument("--pools", type=int, nargs="*", default=[1_000_000, 10_000_000, 100_000_000])
    ap.add_argument("--pool-rounds", type=int, default=40)
    ap.add_argument("--ref-workers", type=int, default=64)
    ap.add_argument("--ref-t-step", type=float, default=0.2)
    args = ap.parse_args()
    g = np.random.default_rng(1).standard_normal(args.grad_size).astype(np.float32)

    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(args.nodes):
        cluster.add_node(num_cpus=1, resources={"sim_gpu": max(args.workers)})
    ray.init(address=cluster.address)
    loads = []
    try:
        with tempfile.TemporaryDirectory() as d:
            path = str(Path(d) / "enriched.parquet")
            pq.write_table(pa.table(make_pool(args.pool)), path)
            runs = [(w, t, report_interval(w)) for w in args.workers for t in args.t_steps]
            if args.baseline:  # the pattern before reports were paced: a call per 64 losses
                runs.insert(0, (max(args.workers), min(args.t_steps), 0.0))
            for workers, t_step, min_seconds in runs:
                r = actor_under_load(workers, t_step, min_seconds, args, path, args.pool, g)
                if min_seconds:
                    loads.append(r)
                else:
                    base = r
                print(f"[bench] W={workers:>5} t_step={t_step * 1e3:>4.0f} ms reports ≥{min_seconds:.1f} s apart: "
                      f"actor busy {r['busy']:.0%}, report p50 {r['p50'] * 1e3:.1f} ms p99 {r['p99'] * 1e3:.1f} ms, "
                      f"blocked {r['blocked']:.2%} of step time, round-end flush p99 {r['flush_p99'] * 1e3:.0f} ms, "
                      f"rank 0 {r['rank0_s']:.2f} s/round, "
                      f"{r['reports'] / r['wall_s']:.0f} reports/s, actor RSS {r['rss_mb']:.0f} MiB, "
                      f"state {r['state_mb']:.2f} MB/round", flush=True)
            paced = next((r for r in loads if (r["workers"], r["t_step"]) == (base["workers"], base["t_step"])), None)
            if args.baseline and paced is not None:
                print(f"[bench] paced vs unpaced reports at W={base['workers']}: calls/s "
                      f"{paced['reports'] / paced['wall_s'] / (base['reports'] / base['wall_s']):.2f}x, actor busy "
                      f"{paced['busy'] / base['busy']:.2f}x, p99 {paced['p99'] / base['p99']:.3f}x", flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()

    costs = []
    for n in args.pools:
        c = round_costs(n, args.pool_rounds, g)
        round_time = c["rows_per_round"] / (args.ref_workers * args.rows_per_step) * args.ref_t_step
        c["share"] = c["round_s"] / round_time
        costs.append(c)
        print(f"[bench] pool {n:,}: selection + journal write {c['round_s']:.3f} s/round (max {c['max_s']:.3f}), "
              f"{c['state_mb']:.2f} MB/round over {c['rounds']} rounds; per-row state {c['bytes_per_row']:.1f} "
              f"bytes; a round of {c['rows_per_round']:,} "
              f"rows on {args.ref_workers} workers at {args.ref_t_step * 1e3:.0f} ms/step takes {round_time:.1f} s: "
              f"{c['share']:.2%}; resume (read + replay {c['rounds']} records) {c['resume_s']:.2f} s after "
              f"{c['build_s']:.1f} s building the selector; the whole state once {c['whole_mb']:.0f} MB in "
              f"{c['whole_s']:.2f} s ({c['whole_mb'] / c['state_mb']:.1f}x a round's record)", flush=True)
    at = {(r["workers"], r["t_step"]): r for r in loads}
    top = at.get((1024, 0.025))
    ten = next((c for c in costs if c["n"] == 10_000_000), None)
    busy, blocked = ("n/a", "n/a") if top is None else (f"{top['busy']:.3f}", f"{top['blocked']:.4f}")
    share = "n/a" if ten is None else f"{ten['share']:.4f}"
    print(f"actor_busy_at_1024={busy} blocked_share_at_1024={blocked} round_overhead_at_10M={share}")


if __name__ == "__main__":
    main()
