"""Progress output: a bar redrawn in place on a terminal, plain lines elsewhere (ray job logs), with rate and time
left worked out from the counts."""

from __future__ import annotations

import io

from lead_ray.runtime import console
from lead_ray.runtime.console import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_bar_redrawn_in_place(monkeypatch) -> None:
    clock = iter([0.0, 1.0, 1.0, 2.0, 2.0, 2.0])  # start, then (update, line) pairs
    monkeypatch.setattr(console.time, "monotonic", lambda: next(clock))
    out = Terminal()
    p = Progress("embed", 40, stream=out)
    p.update(10)  # 10 rows in 1 s: 30 left at 10 rows/s
    p.update(30)
    frames = out.getvalue().split("\r")[1:]
    assert frames[0].startswith("[lead-ray] embed:  25% |█████               | 10/40 rows (10.0 rows/s, 0:01 "
                                "elapsed, 0:03 left)")
    assert frames[1].startswith("[lead-ray] embed: 100% |████████████████████| 40/40 rows (20.0 rows/s")
    assert out.getvalue().endswith("\n") and out.getvalue().count("\n") == 1  # one line on the screen


def test_a_log_gets_a_line_every_interval_and_at_the_end(monkeypatch) -> None:
    clock = iter([0.0, 5.0, 20.0, 20.0, 30.0, 30.0])
    monkeypatch.setattr(console.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    p = Progress("score (base model)", 100, every=15.0)
    p.stream, p.tty = out, False
    p.update(10)  # at 5 s: within the interval, nothing
    p.update(30)  # at 20 s: a line
    p.update(60)  # at 30 s: the end, a line
    assert out.getvalue().splitlines() == [
        "[lead-ray] score (base model):  40% 40/100 rows (2.0 rows/s, 0:20 elapsed, 0:30 left)",
        "[lead-ray] score (base model): 100% 100/100 rows (3.3 rows/s, 0:30 elapsed, 0:00 left)"]


def test_an_unknown_total_counts_and_closes_with_the_figures(monkeypatch) -> None:
    clock = iter([0.0, 1.0, 4.0, 4.0])
    monkeypatch.setattr(console.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    p = Progress("ingest", None, stream=out)
    p.update(100)
    p.update(700)
    p.close()
    assert out.getvalue() == "[lead-ray] ingest: 800 rows (200.0 rows/s, 0:04)\n"


def test_rounds_time_left_is_the_tighter_of_rounds_and_samples() -> None:
    from lead_ray.runtime.console import rounds_time_left

    # 2 rounds of 10 s training 5 and 15 samples: 10 s a round, 1 s a sample
    # rounds bound: 10 s × 9,998 rounds left; samples bound: 1 s × (118·4 - 20) = 452 s -> 452
    assert rounds_time_left([10.0, 10.0], [5, 15], 9_998, 118 * 4 - 20) == 452.0
    # 3 rounds left: 30 s, below the samples bound
    assert rounds_time_left([10.0, 10.0], [5, 15], 3, 452) == 30.0
    # nothing left either way, and no history yet, are 0 s
    assert rounds_time_left([10.0], [5], 0, 100) == 0.0
    assert rounds_time_left([], [], 10, 10) == 0.0
