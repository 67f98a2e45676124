"""Per-worker pieces that must hold at any worker count: seeds that never collide, a health-check interval bounded
by Ray's default."""

from __future__ import annotations

from lead_ray.runtime.ray_init import health_check_interval
from lead_ray.train.loop import worker_seed


def test_worker_seeds_are_distinct_across_ranks_rounds_and_set_up() -> None:
    seeds = [worker_seed(0, rank, r) for rank in range(1024) for r in (None, *range(50))]
    assert len(set(seeds)) == len(seeds) == 1024 * 51
    assert worker_seed(0, 1, 0) != worker_seed(1, 0, 0)  # `seed + rank` would make these equal
    assert worker_seed(3, 2, 7) == worker_seed(3, 2, 7) and 0 <= worker_seed(3, 2, 7) < 2**64


def test_health_check_interval_scales_with_workers_up_to_rays_default() -> None:
    assert health_check_interval(1) == 0.05
    assert health_check_interval(8) == 0.4
    assert health_check_interval(40) == health_check_interval(1024) == 2.0
