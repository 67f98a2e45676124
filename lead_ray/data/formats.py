"""Alpaca, ShareGPT and `messages` rows → one `messages` form, or a quarantine reason."""

from __future__ import annotations

from typing import Any

ROLES = {"system", "user", "assistant"}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "chatgpt": "assistant", "bing": "assistant", "bard": "assistant"}


class BadRow(ValueError):
    """A row that cannot become a training example; the message is the quarantine reason."""


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise BadRow(f"{what} is {type(value).__name__}, not text")
    if not value.strip():
        raise BadRow(f"empty {what}")
    return value


def _alpaca(row: dict[str, Any]) -> list[dict[str, str]]:
    instruction = _text(row.get("instruction"), "instruction")
    extra = row.get("input") or ""
    if not isinstance(extra, str):
        raise BadRow(f"input is {type(extra).__name__}, not text")
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": _text(row.get("output"), "output")}]
    if isinstance(row.get("system"), str) and row["system"].strip():
        messages.insert(0, {"role": "system", "content": row["system"]})
    return messages


def _sharegpt(row: dict[str, Any]) -> list[dict[str, str]]:
    turns = row["conversations"]
    if not isinstance(turns, list):
        raise BadRow("conversations is not a list")
    out = []
    for turn in turns:
        if not isinstance(turn, dict):
            raise BadRow("a conversation turn is not an object")
        role = SHAREGPT_ROLES.get(str(turn.get("from", "")).lower())
        if role is None:
            raise BadRow(f"unknown role {turn.get('from')!r}")
        out.append({"role": role, "content": _text(turn.get("value"), f"{role} turn")})
    return out


def _messages(row: dict[str, Any]) -> list[dict[str, str]]:
    turns = row["messages"]
    if not isinstance(turns, list):
        raise BadRow("messages is not a list")
    out = []
    for turn in turns:
        if not isinstance(turn, dict):
            raise BadRow("a message is not an object")
        role = turn.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise BadRow(f"unknown role {role!r}")
        out.append({"role": role, "content": _text(turn.get("content"), f"{role} message")})
    return out


def detect_format(row: Any) -> str:
    if not isinstance(row, dict):
        raise BadRow(f"row is a JSON {type(row).__name__}, not an object")
    if "messages" in row:
        return "messages"
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row and "output" in row:
        return "alpaca"
    raise BadRow("fits no known format (alpaca, sharegpt, messages)")


def normalize(row: Any) -> list[dict[str, str]]:
    """The row's conversation as `messages`, ending in an assistant turn; raises BadRow with a reason."""
    fmt = detect_format(row)
    messages = {"alpaca": _alpaca, "sharegpt": _sharegpt, "messages": _messages}[fmt](row)
    if not messages:
        raise BadRow("empty conversation")
    if not any(m["role"] == "assistant" for m in messages):
        raise BadRow("no assistant turn")
    while messages[-1]["role"] != "assistant":
        messages = messages[:-1]  # trailing user turns have nothing to supervise
    if not any(m["role"] == "user" for m in messages):
        raise BadRow("no user turn")
    return messages
