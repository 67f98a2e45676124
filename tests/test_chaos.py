"""The fault injector kills only processes of the Ray instance its own process started: a process of another Ray
instance on the same host, with the same title, is never a target (it once was: bench/faults.py SIGKILLed another
run's Train worker)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

from tests.conftest import REPO
from tests.helpers import outside_process

sys.path.insert(0, str(REPO / "bench"))
from chaos import ray_processes  # noqa: E402

TITLE = "ray::RayTrainWorker"


def test_only_descendants_are_targets() -> None:
    child = subprocess.Popen(["bash", "-c", f"exec -a '{TITLE} child' sleep 300"])
    try:
        with outside_process(TITLE) as other:
            deadline = time.time() + 10
            while time.time() < deadline and not ray_processes(TITLE, os.getpid()):
                time.sleep(0.05)
            found = {p.pid for p in ray_processes(TITLE, os.getpid())}
            assert child.pid in found  # this process's own "worker" is found
            assert other not in found and psutil.pid_exists(other)  # the other instance's is not
            assert other in {p.pid for p in ray_processes(TITLE, psutil.Process(other).ppid())}
    finally:
        child.kill()
        child.wait()
