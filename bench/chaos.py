"""Fault injection for tests and bench/faults.py: run LEAD and SIGKILL one Ray process in the middle."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import psutil

from lead_ray.config import LeadConfig


def ray_processes(title: str, root: int) -> list[psutil.Process]:
    """Ray worker processes whose title (`ray::ClassName...`) starts with `title`, among the descendants of process
    `root` (a driver with the local Ray instance it started), so another Ray instance's are never touched."""
    found = []
    try:
        for p in psutil.Process(root).children(recursive=True):
            try:
                if " ".join(p.cmdline() or []).startswith(title):
                    found.append(p)
            except psutil.Error:
                continue
    except psutil.NoSuchProcess:
        return []
    return found


def run_with_kill(cfg: LeadConfig, title: str | None, after_checkpoints: int = 2,
                  timeout_s: float = 600, after_rounds: int = 0) -> tuple[dict[str, Any], int | None]:
    """Run LEAD in a thread; once `after_checkpoints` rounds are checkpointed, SIGKILL the first process titled
    `title` (None: no kill) of the Ray instance this process started (nothing is killed if it joined another one),
    and once `after_rounds` rounds are in the selection journal.
    Returns (the run's summary, the killed pid or None)."""
    from lead_ray.pipeline import run

    out: dict[str, Any] = {}
    errors: list[BaseException] = []

    def target() -> None:
        try:
            out.update(run(cfg))
        except BaseException as e:  # surfaced to the caller below
            errors.append(e)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    ckpt_root, journal = cfg.run_dir / "ray" / "train", cfg.run_dir / "ray" / "selection"
    killed = None
    deadline = time.time() + timeout_s
    while title is not None and time.time() < deadline and thread.is_alive():
        n_ckpt = len(list(ckpt_root.glob("checkpoint_*"))) if ckpt_root.exists() else 0
        n_rounds = len(list(journal.glob("round_*.npz"))) if journal.exists() else 0
        ready = n_ckpt >= after_checkpoints and n_rounds >= after_rounds
        procs = ray_processes(title, os.getpid()) if ready else []
        if procs:
            killed = procs[0].pid
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.02)
    thread.join(timeout=max(1.0, deadline - time.time()))
    if errors:
        raise errors[0]
    if thread.is_alive():
        raise TimeoutError(f"the run did not finish within {timeout_s}s")
    return out, killed
