"""What lead-ray prints on the terminal: log lines, and the aligned two-column tables of the run, eval and lm-eval
summaries (and the values in report/summary.md), all formatted one way."""

from __future__ import annotations

import math
import sys
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
