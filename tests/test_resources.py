"""A local instance too small for the run is refused on the driver, in one line, before anything waits on it."""

from __future__ import annotations

import pytest

from lead_ray.config import ConfigError, LeadConfig
from lead_ray.runtime.ray_init import check_resources


def test_check_resources_counts_actor_pools_and_their_feeding_tasks(ray_local) -> None:
    cpus = int(ray_local.cluster_resources()["CPU"])  # 4: tests/conftest.py
    check_resources(LeadConfig.from_flat(embedding_concurrency=cpus - 1))  # the pool and one CPU for its feeding tasks
    for key in ("preprocessing_num_workers", "embedding_concurrency", "score_concurrency"):
        # num_cpus=1 with one embedding actor once hung in the embed stage: its repartition task never ran
        with pytest.raises(ConfigError, match=rf"'{key}': {cpus} actor\(s\) .* need {cpus + 1} CPUs, the local "
                                              rf"instance has {cpus} \(raise num_cpus or lower {key}\)"):
            check_resources(LeadConfig.from_flat(**{key: cpus}))
    with pytest.raises(ConfigError, match=f"'num_workers': {cpus + 1} workers need a CPU each"):
        check_resources(LeadConfig.from_flat(num_workers=cpus + 1))
