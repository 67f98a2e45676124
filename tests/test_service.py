"""The SelectionService actor: a thin shell whose answers match the pure selector, through real Ray calls."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lead_ray.select.lead import LeadSelector
from lead_ray.select.service import start_service

PARAMS = {"num_arms": 3, "gamma": 0.2, "smoothing": 0.3, "sample_rate": 0.1, "max_uses": 2, "budget": 40,
          "max_rounds": 8, "seed": 7}


def _enriched(path: Path, n: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    iu0, arm, group = rng.uniform(0.5, 3.0, n), rng.integers(-1, 3, n), rng.integers(0, 4, n)
    pq.write_table(pa.table({"id": np.arange(n), "arm": arm, "group": group, "iu0": iu0}), path)
    return iu0, arm, group


def _drive(next_round, report, end_round, rounds: int, rng: np.random.Generator) -> list[np.ndarray]:
    picked = []
    for _ in range(rounds):
        plan = next_round()
        if plan is None:
            break
        ids = plan.ids
        picked.append(ids)
        half = len(ids) // 2  # two "workers" report their shares separately
        report(ids[:half], rng.uniform(0, 3, half))
        report(ids[half:], rng.uniform(0, 3, len(ids) - half))
        end_round(rng.normal(size=16), rng.normal(size=16))
    return picked


def test_service_matches_pure_selector_and_restores(ray_local, tmp_path: Path) -> None:
    ray = ray_local
    iu0, arm, group = _enriched(tmp_path / "enriched.parquet")
    actor = start_service(str(tmp_path / "enriched.parquet"), PARAMS, str(tmp_path / "journal"))
    pure = LeadSelector(iu0, arm, group, **PARAMS)

    got = _drive(lambda: ray.get(actor.next_round.remote()), lambda i, v: actor.report.remote(i, v),
                 lambda g, u: ray.get(actor.end_round.remote(g, u, -1)), 3, np.random.default_rng(1))
    want = _drive(pure.next_round, pure.report,
                  pure.end_round, 3, np.random.default_rng(1))
    assert len(got) == 3 and all(np.array_equal(a, b) for a, b in zip(got, want))

    journal = sorted(p.name for p in (tmp_path / "journal").iterdir())
    assert journal == [f"round_{r:05d}.npz" for r in range(3)]  # one file per ended round
    later = _drive(lambda: ray.get(actor.next_round.remote()), lambda i, v: actor.report.remote(i, v),
                   lambda g, u: ray.get(actor.end_round.remote(g, u, -1)), 2, np.random.default_rng(2))
    fresh = start_service(str(tmp_path / "enriched.parquet"), PARAMS, str(tmp_path / "journal"))
    assert ray.get(fresh.restore.remote(3)) == 3  # rounds 0..2 from the journal (the files of rounds 3, 4 unread)
    again = _drive(lambda: ray.get(fresh.next_round.remote()), lambda i, v: fresh.report.remote(i, v),
                   lambda g, u: ray.get(fresh.end_round.remote(g, u, -1)), 2, np.random.default_rng(2))
    assert all(np.array_equal(a, b) for a, b in zip(later, again))

    summary = ray.get(fresh.summary.remote())
    sel = ray.get(fresh.selections.remote())
    assert summary["rounds"] == 5 and len(sel["id"]) == sum(len(x) for x in got + later)
    assert not np.isnan(sel["loss"]).any()  # every selected sample's loss arrived before end_round
    assert np.all(arm[sel["id"]] >= 0)
    assert abs(sum(summary["arm_probs"]) - 1) < 1e-9


def test_restart_after_the_last_report_makes_workers_resend(ray_local, tmp_path: Path) -> None:
    """The service dies after every loss of the round arrived but before end_round. Ray restarts it empty: it
    answers LOST and drops reports until rank 0 gives back the state it holds and the plan, which it replays; the
    round's losses are not in it, so end_round refuses the stale token and the workers' resend fills them in."""
    import torch

    from lead_ray.select.service import LOST
    from lead_ray.train.reporter import LossReporter

    ray = ray_local
    _enriched(tmp_path / "enriched.parquet")
    actor = start_service(str(tmp_path / "enriched.parquet"), PARAMS, str(tmp_path / "journal"))
    reporter = LossReporter(actor, min_batch=4, min_seconds=0)
    reporter.restore(None)
    plan = reporter.next_round()
    reporter.start_round()
    losses = torch.linspace(0.5, 2.5, len(plan.ids))
    for s in range(0, len(plan.ids), 3):
        reporter.add(plan.ids[s : s + 3], losses[s : s + 3])
    reporter.flush()
    old = reporter.incarnation
    ray.kill(actor, no_restart=False)  # Ray restarts it, empty
    empty = (np.empty(0, dtype=np.int64), np.empty(0))
    deadline = time.time() + 60
    while ray.get(actor.report.remote(*empty)) == old:  # the kill is asynchronous: wait for the new incarnation
        assert time.time() < deadline, "the service was not restarted"
        time.sleep(0.05)

    args = (np.zeros(16), np.zeros(16), plan.round)
    for answer in (actor.next_round.remote(), actor.end_round.remote(*args, [old]), actor.summary.remote()):
        assert ray.get(answer) == LOST  # nothing answered, nothing ended, until the state is back
    stats = reporter.end_round(0, 1, *args)  # restores the state and the plan, then the workers resend
    assert stats is not None and stats["round"] == plan.round and reporter.incarnation != old
    sel = ray.get(actor.selections.remote())
    assert len(sel["id"]) == len(plan.ids) and not np.isnan(sel["loss"]).any()
    np.testing.assert_allclose(sel["loss"][np.argsort(sel["id"])],
                               losses.numpy()[np.argsort(plan.ids)], rtol=1e-6)
    assert ray.get(actor.end_round.remote(*args, [old])).stats == stats  # a retried call of a finished round
    assert reporter.rounds == 1 and reporter.planned == ()  # rank 0 holds the round count after the round


def _scrape(port: int, run: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text from Ray's metrics agent: {metric: [(labels, value)]} for this run's series."""
    import re
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for m in re.finditer(r"^(ray_lead_ray_\w+)\{([^}]*)\} (\S+)$", text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        if labels.get("run") == run:
            out.setdefault(m.group(1), []).append((labels, float(m.group(3))))
    return out


def test_service_exports_ray_metrics(ray_local, tmp_path: Path) -> None:
    """Arm probabilities, rounds, unique samples, reports and report latency, read back from the node's metrics
    endpoint (what the Ray dashboard and Prometheus scrape)."""
    import ray as ray_module

    ray = ray_local
    _enriched(tmp_path / "enriched.parquet")
    actor = start_service(str(tmp_path / "enriched.parquet"), PARAMS, str(tmp_path / "journal"), run="metrics-test")
    _drive(lambda: ray.get(actor.next_round.remote()), lambda i, v: actor.report.remote(i, v),
           lambda g, u: ray.get(actor.end_round.remote(g, u, -1)), 3, np.random.default_rng(1))
    summary = ray.get(actor.summary.remote())
    port = ray_module._private.worker.global_worker.node.metrics_export_port
    deadline, got = time.time() + 90, {}
    while time.time() < deadline:  # the agent exports every few seconds
        got = _scrape(port, "metrics-test")
        if got.get("ray_lead_ray_round", [({}, -1)])[0][1] == 3 and "ray_lead_ray_report_seconds_count" in got:
            break
        time.sleep(2)
    assert got["ray_lead_ray_round"][0][1] == summary["rounds"] == 3, got
    assert got["ray_lead_ray_unique_samples"][0][1] == summary["num_unique"]
    probs = {labels["arm"]: v for labels, v in got["ray_lead_ray_arm_probability"]}
    assert sorted(probs) == ["0", "1", "2"] and abs(sum(probs.values()) - 1) < 1e-6
    np.testing.assert_allclose([probs[str(a)] for a in range(3)], summary["arm_probs"], rtol=1e-6)
    assert got["ray_lead_ray_reports_total"][0][1] == 6  # two "workers" per round, three rounds
    assert got["ray_lead_ray_report_seconds_count"][0][1] == 6


def test_reports_are_paced_by_size_and_time(ray_local, tmp_path: Path) -> None:
    """A report leaves once min_batch losses are buffered and min_seconds passed since the last one (the first of a
    round: (1 - phase) · min_seconds after its start); the flush sends the rest. Paced or not, every loss reaches
    the service exactly once."""
    import torch

    from lead_ray.train.reporter import LossReporter

    _enriched(tmp_path / "enriched.parquet")
    # (min_seconds, phase, reports before the flush, every report's size)
    for min_seconds, phase, before_flush, sizes in ((0.0, 0.0, 2, [6, 6]), (3600.0, 0.0, 0, [12]),
                                                    (3600.0, 1.0, 1, [6, 6])):
        actor = start_service(str(tmp_path / "enriched.parquet"), PARAMS, str(tmp_path / "journal"))
        reporter = LossReporter(actor, min_batch=4, min_seconds=min_seconds, phase=phase)
        reporter.restore(None)
        reporter.next_round()
        reporter.start_round()
        ids = np.arange(100, 112)
        for s in range(0, 12, 3):  # 3 losses a step: 6 buffered at the 2nd step, 6 more at the 4th
            reporter.add(ids[s : s + 3], torch.arange(s, s + 3, dtype=torch.float32))
        assert len(reporter.sent) == before_flush
        reporter.flush()
        assert [len(i) for i, _ in reporter.sent] == sizes
        sent = np.concatenate([i for i, _ in reporter.sent])
        np.testing.assert_array_equal(np.sort(sent), np.sort(ids))
        ray_local.kill(actor)


def test_restore_drops_the_old_state_before_building_the_new(ray_local, tmp_path: Path) -> None:
    """At 100M rows a selector is gigabytes: a restore must not hold two. The service (the actor's class, run in
    this process) builds the new selector only once nothing refers to the old one, and answers LOST meanwhile."""
    import gc
    import weakref

    from lead_ray.select.service import SelectionService, is_lost

    _enriched(tmp_path / "enriched.parquet")
    service = SelectionService(str(tmp_path / "enriched.parquet"), PARAMS, str(tmp_path / "journal"))
    service.restore(0)
    plan = service.next_round()
    service.report(plan.ids, np.ones(len(plan.ids)))
    service.end_round(np.zeros(4), np.zeros(4), 0)
    old = weakref.ref(service.selector)
    seen = []
    build = service._fresh_selector

    def watched():
        gc.collect()
        seen.append((old() is None, service.lost, service.next_round()))
        return build()

    service._fresh_selector = watched
    assert service.restore(1) == 1
    ((released, lost, answer),) = seen
    assert released and lost and is_lost(answer)
    assert not service.lost and np.array_equal(service.selections()["id"], plan.ids)
