"""Shared fixtures: one real local Ray instance for the whole session, the tiny model, and configs/tiny.yaml's pool
prepared once (`tiny_prepared`, copied into a run folder by `seed_prepared`).

No test may stop Ray instances it did not start (`ray stop --force` would kill this one): tests/test_cloud_storage.py
stops only the head it started."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import settings

from lead_ray.runtime.folders import RUN_MARKER

# A test that uses Ray in this process asks for `ray_local` (or starts a run, which starts its own instance). Ray's
# auto-connect would otherwise join whatever /tmp/ray/ray_current_cluster names: an instance an earlier module
# stopped, where it waits minutes for a GCS that is gone.
os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.path.expanduser("~/.cache/lead-ray"))
TINY = REPO / "configs" / "tiny.yaml"

# Property tests are derandomized, so CI is reproducible; LEAD_RAY_FUZZ_RANDOM=1 explores fresh inputs (pin what it
# finds with @example).
settings.register_profile("reproducible", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile("explore" if os.environ.get("LEAD_RAY_FUZZ_RANDOM") == "1" else "reproducible")


def _start_local_ray():
    import ray

    from lead_ray.config import LeadConfig
    from lead_ray.runtime.ray_init import init_ray

    init_ray(LeadConfig.from_flat(num_cpus=4))
    return ray


@pytest.fixture(scope="module")
def ray_local():
    """A real local Ray instance, shared by the tests of one module (see `_one_ray_instance_per_module`)."""
    return _start_local_ray()


@pytest.fixture(scope="module", autouse=True)
def _one_ray_instance_per_module():
    """Whatever Ray instance a module's tests started in this process (`ray_local`, or a pipeline run in process)
    stops with the module. One instance for the whole session lost actor notifications after ~25 minutes of
    in-process runs (a new actor stayed PENDING in the driver although the GCS had it ALIVE), and every later
    Ray Data actor pool then hung until the test timeout."""
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model_path() -> str:
    from lead_ray.models.load import resolve_model_path

    return resolve_model_path("builtin:tiny", CACHE)


def _tiny_job_folder(request, tmp_path_factory) -> Path:
    """Where the session's tiny job runs: under pytest-xdist, the session's shared temporary folder, above every
    worker's own, so the workers share one run."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if hasattr(request.config, "workerinput") else base) / "tiny_job"


@pytest.fixture(scope="session", autouse=True)
def _start_tiny_job_early(request, tmp_path_factory) -> None:
    """Start `tiny_job`'s run in the background at the session's first test, when any collected test reads it:
    the workers run other tests meanwhile instead of one waiting for the other's run (~200 s of the suite)."""
    if any("tiny_job" in item.fixturenames for item in request.session.items):
        _launch_tiny_job(_tiny_job_folder(request, tmp_path_factory))


def _launch_tiny_job(folder: Path) -> None:
    """`python jobs/lead.py --config configs/tiny.yaml report_to=…` into `folder`, once whoever asks (a lock
    between xdist workers); its shell writes stdout, stderr and then the exit code, the last as the sign it ended."""
    from filelock import FileLock

    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if (folder / "launched").exists():
            return
        # with every report_to backend, offline (tests/test_tracking.py reads them back)
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"WANDB_MODE": "offline",
                                                                                     "WANDB_SILENT": "true"}
        cmd = [sys.executable, "jobs/lead.py", "--config", str(TINY), "--output-dir", str(folder),
               "report_to=tensorboard,mlflow,wandb"]
        shell = (f'timeout 900 {shlex.join(cmd)} > "$1/stdout" 2> "$1/stderr"; echo $? > "$1/rc.part" && '
                 'mv "$1/rc.part" "$1/rc"')
        subprocess.Popen(["bash", "-c", shell, "tiny_job", str(folder)], cwd=REPO, env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        (folder / "launched").write_text(shlex.join(cmd))


@pytest.fixture(scope="session")
def tiny_job(request, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """`python jobs/lead.py --config configs/tiny.yaml report_to=…`, from scratch, once per session (started early
    by `_start_tiny_job_early`): its run folder and the finished process. Another Ray instance (this process's) runs
    on the host meanwhile, which once made Ray Train's placement-group cleaner print a traceback at every training
    start. Tests only read the run."""
    _start_local_ray()
    folder = _tiny_job_folder(request, tmp_path_factory)
    _launch_tiny_job(folder)  # when the early start did not (a test asked for it by getfixturevalue)
    deadline = time.time() + 960
    while not (folder / "rc").exists():
        assert time.time() < deadline, f"the tiny job in {folder} did not end in 960 s"
        time.sleep(1)
    proc = subprocess.CompletedProcess(shlex.split((folder / "launched").read_text()),
                                       int((folder / "rc").read_text()), (folder / "stdout").read_text(),
                                       (folder / "stderr").read_text())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder / "tiny", proc


@pytest.fixture(scope="session")
def tiny_prepared(tiny_job) -> Path:
    """configs/tiny.yaml's pool, ingested and prepared once (by `tiny_job`). The stage keys depend on the data
    files' contents, not on folders, so a run seeded with a copy (`seed_prepared`) skips ingest, embed and scoring
    exactly as a rerun does; test_prepare.py still runs every stage under `lead-ray prepare`."""
    return tiny_job[0]


def seed_prepared(prepared: Path, run_dir: Path) -> Path:
    """A run folder holding a copy of the prepared pool (pool/, prep/ and lead-ray's folder marker); returns
    `run_dir`."""
    run_dir.mkdir(parents=True)
    for name in ("pool", "prep"):
        shutil.copytree(prepared / name, run_dir / name)
    shutil.copy2(prepared / RUN_MARKER, run_dir / RUN_MARKER)
    return run_dir


def seed_sweep(prepared: Path, sweep_dir: Path) -> Path:
    """A sweep folder carrying lead-ray's marker (as `lead-ray tune` makes it) whose shared/ holds a copy of the
    prepared pool; returns `sweep_dir`. A sweep refuses a folder with files and no marker."""
    from lead_ray.runtime.folders import claim_folder

    claim_folder(sweep_dir)
    seed_prepared(prepared, sweep_dir / "shared")
    return sweep_dir


@pytest.fixture(scope="session")
def s3_env() -> dict[str, str]:
    """A local S3 API (moto's threaded server on 127.0.0.1) and the environment that points clients at it, as a
    cloud user's environment would: set in this process, and passed to the jobs tests start."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    from lead_ray.runtime.ray_init import environ

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per S3 request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    with environ(**env):
        boto3.client("s3").create_bucket(Bucket="lead-ray-test")
        yield env
    server.stop()
