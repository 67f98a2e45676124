"""Helpers several test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def outside_process(title: str) -> Iterator[int]:
    """A process titled `title` that is not a descendant of this one (its parent shell exits at once, so it is
    re-parented): another Ray instance's worker, as far as a process tree can tell."""
    out = subprocess.run(["bash", "-c", f"(exec -a '{title} decoy' sleep 300) >/dev/null 2>&1 & echo $!"],
                         capture_output=True, text=True, check=True)
    pid = int(out.stdout.strip())
    try:
        yield pid
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
