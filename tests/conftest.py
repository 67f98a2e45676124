"""Shared fixtures: one real local Ray instance for the whole session, the tiny model, and configs/tiny.yaml's pool
prepared once (`tiny_prepared`, copied into a run folder by `seed_prepared`).

No test may stop Ray instances it did not start (`ray stop --force` would kill this one): tests/test_job_submit.py
stops only the head it started."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.path.expanduser("~/.cache/lead-ray"))
TINY = REPO / "configs" / "tiny.yaml"

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


@pytest.fixture(scope="session")
def tiny_prepared(ray_local, tmp_path_factory) -> Path:
    """configs/tiny.yaml's pool, ingested and prepared once (pool/, prep/). The stage keys do not depend on the
    folder, so a run seeded with a copy skips ingest, embed and scoring exactly as a rerun does; tests about those
    stages (test_e2e.py::test_job_tiny_direct, test_prepare.py) still run them."""
    from lead_ray.config import load_config
    from lead_ray.pipeline import prepare_stages

    cfg = load_config(TINY, {"output_dir": str(tmp_path_factory.mktemp("tiny_prepared")), "run_name": "tiny"})
    prepare_stages(cfg, cfg.run_dir)
    return cfg.run_dir


def seed_prepared(prepared: Path, run_dir: Path) -> Path:
    """A run folder holding a copy of the prepared pool (and lead-ray's folder marker); returns `run_dir`."""
    shutil.copytree(prepared, run_dir)
    return run_dir
