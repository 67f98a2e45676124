"""Shared fixtures: one real local Ray instance for the whole session, and the tiny model.

No test may stop Ray instances it did not start (`ray stop --force` would kill this one): tests/test_job_submit.py
stops only the head it started."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.path.expanduser("~/.cache/lead-ray"))

# Property tests are derandomized, so CI is reproducible; LEAD_RAY_FUZZ_RANDOM=1 explores fresh inputs (pin what it
# finds with @example).
settings.register_profile("reproducible", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile("explore" if os.environ.get("LEAD_RAY_FUZZ_RANDOM") == "1" else "reproducible")


@pytest.fixture(scope="session")
def ray_local():
    import ray

    from lead_ray.config import LeadConfig
    from lead_ray.runtime.ray_init import init_ray

    init_ray(LeadConfig(num_cpus=4))
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model_path() -> str:
    from lead_ray.models.load import resolve_model_path

    return resolve_model_path("builtin:tiny", CACHE)
