"""Stop a local Ray instance when the driver that started it dies, even by SIGKILL.

Ray's dashboard and runtime-env agents outlive a SIGKILLed driver (seen with Ray 2.60), still listening on their
ports. A small watcher process, started with the instance, follows the driver's process tree while the driver
lives and kills what is left of that tree once it is gone. Run as `python -m lead_ray.runtime.reaper DRIVER_PID`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil


def watch(driver_pid: int, interval: float = 1.0) -> None:
    try:
        driver = psutil.Process(driver_pid)
    except psutil.Error:
        return
    tree: dict[int, psutil.Process] = {}  # a psutil.Process knows its start time, so a reused pid is never killed
    while driver.is_running() and driver.status() != psutil.STATUS_ZOMBIE:
        try:
            for p in driver.children(recursive=True):
                if p.pid != os.getpid():
                    tree.setdefault(p.pid, p)
        except psutil.Error:
            pass
        time.sleep(interval)
    time.sleep(2 * interval)  # a normal exit shuts Ray down itself; this only sweeps up what it left
    for p in tree.values():
        try:
            p.kill()
        except psutil.Error:
            pass


_reaper: subprocess.Popen | None = None  # one per driver process, however many instances it starts in turn


def start_reaper() -> None:
    """Watch this process, once: in its own session, so a signal to the driver's process group does not stop it."""
    global _reaper
    if _reaper is None or _reaper.poll() is not None:
        _reaper = subprocess.Popen([sys.executable, "-m", "lead_ray.runtime.reaper", str(os.getpid())],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)


if __name__ == "__main__":
    watch(int(sys.argv[1]))
