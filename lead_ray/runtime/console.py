"""What lead-ray prints on the terminal: log lines, and the aligned two-column tables of the run, eval and lm-eval
summaries (and the values in report/summary.md), all formatted one way."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from typing import Any


def log(msg: str) -> None:
    """One line on stdout. Written, not printed: in its workers Ray Train patches `print` to echo each line to its
    logger as well, so every worker line reached the console twice."""
    sys.stdout.write(f"[lead-ray] {msg}\n")
    sys.stdout.flush()


def format_value(v: Any, digits: int = 4) -> str:
    """A figure as text: floats to `digits` places, None and non-finite as n/a, booleans in lower case."""
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.{digits}f}"
    return str(v)


def aligned(rows: Sequence[tuple[str, Any]]) -> str:
    """(label, value) rows as indented, aligned terminal lines."""
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"  {k:<{width}}  {v if isinstance(v, str) else format_value(v)}" for k, v in rows)


class Progress:
    """A long stage's progress. On a terminal: one bar redrawn in place, with rate and time left. Elsewhere (`ray job
    logs`, a file): a plain line every `every` seconds and at the end, with the same figures."""

    def __init__(self, label: str, total: int | None, unit: str = "rows", every: float = 15.0,
                 stream: Any = None) -> None:
        self.label, self.total, self.unit, self.every = label, total, unit, every
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.done, self.start = 0, time.monotonic()
        self.shown = self.start

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        finished = self.total is not None and self.done >= self.total
        if finished or now - self.shown >= (0.2 if self.tty else self.every):
            self.shown = now
            self._show(end="\n" if finished else "")

    def close(self) -> None:
        """The last figures, if the bar or line did not show them yet."""
        if self.total is None or self.done < self.total:
            self._show(end="\n")

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.done / elapsed
        if self.total is None:
            return f"{self.label}: {self.done} {self.unit} ({rate:.1f} {self.unit}/s, {clock(elapsed)})"
        share = min(self.done / max(self.total, 1), 1.0)
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        bar = ("█" * round(20 * share)).ljust(20) if self.tty else ""
        return (f"{self.label}: {share:4.0%} {'|' + bar + '| ' if bar else ''}{self.done}/{self.total} {self.unit} "
                f"({rate:.1f} {self.unit}/s, {clock(elapsed)} elapsed, {clock(left)} left)")

    def _show(self, end: str) -> None:
        if self.tty:
            self.stream.write(f"\r[lead-ray] {self.line()}\033[K{end}")
            self.stream.flush()
        elif end or self.done:
            self.stream.write(f"[lead-ray] {self.line()}\n")
            self.stream.flush()


def rounds_time_left(round_seconds: list[float], round_samples: list[int], rounds_left: int,
                     samples_left: int) -> float:
    """An upper bound on a selection run's remaining time: the mean round time × the rounds left, or the mean time
    per sample × the samples that may still be trained (unique budget × max_uses, less those trained), whichever is
    smaller. The first alone said 50 hours for a 15-minute run whose `max_rounds` was a loose 10,000."""
    by_rounds = sum(round_seconds) / max(1, len(round_seconds)) * max(0, rounds_left)
    by_samples = sum(round_seconds) / max(1, sum(round_samples)) * max(0, samples_left)
    return min(by_rounds, by_samples)


def clock(seconds: float) -> str:
    """Seconds as m:ss (h:mm:ss past an hour); ? when unknown."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
