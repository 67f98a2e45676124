"""Config fields that carry their own documentation and checks: help, choices, range, and whether the key is
operational (how a run is executed, logged or reported, never what it trains).

`arg()` declares a field; `check_section()` validates every field of a section from that metadata, so a choice or a
range is written once, where the key is declared, and the README's config table is generated from the same place.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any


class LeadRayError(Exception):
    """An error the user can fix (input, config, model, a failed run): the CLI prints its message as one line.
    Defined here, at the bottom, so the CLI catches every kind without importing Ray or torch."""


class ConfigError(LeadRayError, ValueError):
    """A bad config value or key; the message names it."""


def arg(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = None,  # noqa: A002 (HF's name)
        choices: tuple | None = None, ge: float | None = None, gt: float | None = None, le: float | None = None,
        lt: float | None = None, operational: bool = False, doc_default: str | None = None) -> Any:
    """A config field. `operational`: changing it never changes a result (never resets a run nor redoes a stage).
    `choices` and the bounds are checked by `check_section`; `doc_default` is how the README shows a default that
    is computed (a factory)."""
    meta = {"help": help, "choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt, "operational": operational,
            "doc_default": doc_default}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def is_operational(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("operational"))


def range_text(meta: dict[str, Any]) -> str:
    """The bounds as people write them: `>= 1`, `> 0`, `[0, 1)`, `(0, 1]`."""
    def num(v: float) -> str:
        if float(v).is_integer():
            v = int(v)
            return f"2^{v.bit_length() - 1}" if v >= 65536 and v & (v - 1) == 0 else str(v)
        return f"{v:g}"

    lo = ("[", meta["ge"]) if meta.get("ge") is not None else ("(", meta["gt"]) if meta.get("gt") is not None else None
    hi = ("]", meta["le"]) if meta.get("le") is not None else (")", meta["lt"]) if meta.get("lt") is not None else None
    if lo and hi:
        return f"{lo[0]}{num(lo[1])}, {num(hi[1])}{hi[0]}"
    if lo:
        return f"{'>=' if lo[0] == '[' else '>'} {num(lo[1])}"
    if hi:
        return f"{'<=' if hi[0] == ']' else '<'} {num(hi[1])}"
    return ""


def check_section(section: Any, keys: tuple[str, ...] | None = None) -> None:
    """Every field of a section (or those in `keys`) against its metadata: finite numbers, one of its choices,
    within its range. Raises ConfigError naming the key; None passes (whether a key may be null is its type's
    business)."""
    for f in dataclasses.fields(section):
        if keys is not None and f.name not in keys:
            continue
        value, meta = getattr(section, f.name), f.metadata
        if value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config key '{f.name}': must be a finite number (got {value!r})")
        choices = meta.get("choices")
        if choices is not None:
            values = value if isinstance(value, list) else [value]
            if not values or any(v not in choices for v in values):
                raise ConfigError(f"config key '{f.name}': must be {_one_of(choices, null=_nullable(f))} "
                                  f"(got {value!r})")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            ge, gt, le, lt = (meta.get(k) for k in ("ge", "gt", "le", "lt"))
            if ((ge is not None and value < ge) or (gt is not None and value <= gt)
                    or (le is not None and value > le) or (lt is not None and value >= lt)):
                raise ConfigError(f"config key '{f.name}': must be {_in(range_text(meta))}"
                                  f"{' or null' if _nullable(f) else ''} (got {value!r})")


def _nullable(f: dataclasses.Field) -> bool:
    return "None" in str(f.type)


def _in(text: str) -> str:
    return f"in {text}" if text[0] in "[(" else text


def _one_of(choices: tuple, null: bool = False) -> str:
    names = [str(c) for c in choices] + (["null"] if null else [])
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def check_choice(section: type, key: str, value: Any) -> None:
    """One value against a field's choices, for a function that takes the key alone (ingest's `dedup`)."""
    choices = next(f.metadata["choices"] for f in dataclasses.fields(section) if f.name == key)
    if value not in choices:
        raise ConfigError(f"config key '{key}': must be {_one_of(choices)} (got {value!r})")
