"""Tests for `lead_ray.data.formats.normalize`: Alpaca / ShareGPT / messages rows -> `messages`, or BadRow.

Expected message lists are written out by hand.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lead_ray.data.formats import BadRow, normalize


def _m(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


# ---------------------------------------------------------------------------------------------------------------
# Valid rows
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        pytest.param(
            {"instruction": "Add 2 and 3.", "output": "5"},
            [_m("user", "Add 2 and 3."), _m("assistant", "5")],
            id="alpaca-no-input",
        ),
        pytest.param(
            {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
            [_m("user", "Add 2 and 3."), _m("assistant", "5")],
            id="alpaca-empty-input",
        ),
        pytest.param(
            {"instruction": "Add 2 and 3.", "input": "   \n", "output": "5"},
            [_m("user", "Add 2 and 3."), _m("assistant", "5")],
            id="alpaca-whitespace-input",
        ),
        pytest.param(
            {"instruction": "Add 2 and 3.", "input": None, "output": "5"},
            [_m("user", "Add 2 and 3."), _m("assistant", "5")],
            id="alpaca-null-input",
        ),
        pytest.param(
            {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
            [_m("user", "Translate to French.\n\nGood morning"), _m("assistant", "Bonjour")],
            id="alpaca-with-input",
        ),
        pytest.param(
            {"system": "Be terse.", "instruction": "Capital of France?", "output": "Paris"},
            [_m("system", "Be terse."), _m("user", "Capital of France?"), _m("assistant", "Paris")],
            id="alpaca-with-system",
        ),
        pytest.param(
            {"system": "  ", "instruction": "Capital of France?", "output": "Paris"},
            [_m("user", "Capital of France?"), _m("assistant", "Paris")],
            id="alpaca-blank-system-dropped",
        ),
        pytest.param(
            {"instruction": "Hi", "output": "Hello", "extra_field": [1, 2], "id": 7},
            [_m("user", "Hi"), _m("assistant", "Hello")],
            id="alpaca-extra-fields-ignored",
        ),
        pytest.param(
            {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]},
            [_m("user", "Hi"), _m("assistant", "Hello!")],
            id="sharegpt",
        ),
        pytest.param(
            {
                "conversations": [
                    {"from": "system", "value": "You are kind."},
                    {"from": "human", "value": "Q1"},
                    {"from": "gpt", "value": "A1"},
                    {"from": "human", "value": "Q2"},
                    {"from": "gpt", "value": "A2"},
                ]
            },
            [_m("system", "You are kind."), _m("user", "Q1"), _m("assistant", "A1"), _m("user", "Q2"),
             _m("assistant", "A2")],
            id="sharegpt-system-multi-turn",
        ),
        pytest.param(
            {"conversations": [{"from": "Human", "value": "Hi"}, {"from": "GPT", "value": "Yo"}]},
            [_m("user", "Hi"), _m("assistant", "Yo")],
            id="sharegpt-role-case-insensitive",
        ),
        pytest.param(
            {"conversations": [{"from": "user", "value": "Hi"}, {"from": "assistant", "value": "Yo"}]},
            [_m("user", "Hi"), _m("assistant", "Yo")],
            id="sharegpt-openai-role-names",
        ),
        pytest.param(
            {"messages": [_m("user", "What is 2+2?"), _m("assistant", "4")]},
            [_m("user", "What is 2+2?"), _m("assistant", "4")],
            id="messages",
        ),
        pytest.param(
            {"messages": [_m("system", "S"), _m("user", "U1"), _m("assistant", "A1"), _m("user", "U2"),
                          _m("assistant", "A2")]},
            [_m("system", "S"), _m("user", "U1"), _m("assistant", "A1"), _m("user", "U2"), _m("assistant", "A2")],
            id="messages-multi-turn",
        ),
        pytest.param(
            {"messages": [{"role": "user", "content": "Hi", "name": "x"}, {"role": "assistant", "content": "Yo"}]},
            [_m("user", "Hi"), _m("assistant", "Yo")],
            id="messages-extra-keys-dropped",
        ),
    ],
)
def test_valid_rows(row: dict[str, Any], expected: list[dict[str, str]]) -> None:
    assert normalize(row) == expected


def test_trailing_user_turns_dropped_messages() -> None:
    row = {"messages": [_m("user", "Q1"), _m("assistant", "A1"), _m("user", "Q2"), _m("user", "Q3")]}
    assert normalize(row) == [_m("user", "Q1"), _m("assistant", "A1")]


def test_trailing_user_turn_dropped_sharegpt() -> None:
    row = {"conversations": [{"from": "human", "value": "Q1"}, {"from": "gpt", "value": "A1"},
                             {"from": "human", "value": "Q2"}]}
    assert normalize(row) == [_m("user", "Q1"), _m("assistant", "A1")]


def test_trailing_system_turn_dropped() -> None:
    row = {"messages": [_m("user", "Q"), _m("assistant", "A"), _m("system", "late")]}
    assert normalize(row) == [_m("user", "Q"), _m("assistant", "A")]


def test_content_is_kept_verbatim() -> None:
    content = "  leading and trailing spaces\n\nand unicode: café ✓  "
    assert normalize({"messages": [_m("user", "q"), _m("assistant", content)]})[-1]["content"] == content


def test_messages_takes_precedence_over_other_keys() -> None:
    row = {"messages": [_m("user", "M"), _m("assistant", "N")], "instruction": "I", "output": "O"}
    assert normalize(row) == [_m("user", "M"), _m("assistant", "N")]


def test_input_row_not_mutated() -> None:
    row = {"messages": [_m("user", "Q1"), _m("assistant", "A1"), _m("user", "Q2")]}
    before = repr(row)
    normalize(row)
    assert repr(row) == before


# ---------------------------------------------------------------------------------------------------------------
# Bad rows: BadRow with a reason that names the problem
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        pytest.param([1, 2], "not an object", id="list-row"),
        pytest.param("text", "not an object", id="string-row"),
        pytest.param(None, "not an object", id="null-row"),
        pytest.param(3, "not an object", id="int-row"),
        pytest.param({}, "no known format", id="empty-object"),
        pytest.param({"prompt": "x", "completion": "y"}, "no known format", id="unknown-format"),
        pytest.param({"instruction": "x"}, "no known format", id="alpaca-no-output"),
        pytest.param({"instruction": "", "output": "y"}, "empty instruction", id="alpaca-empty-instruction"),
        pytest.param({"instruction": "x", "output": ""}, "empty output", id="alpaca-empty-output"),
        pytest.param({"instruction": " \n\t", "output": "y"}, "empty instruction", id="alpaca-ws-instruction"),
        pytest.param({"instruction": "x", "output": "   "}, "empty output", id="alpaca-ws-output"),
        pytest.param({"instruction": 5, "output": "y"}, "instruction is int, not text", id="alpaca-int-instr"),
        pytest.param({"instruction": "x", "output": None}, "output is NoneType", id="alpaca-null-output"),
        pytest.param({"instruction": "x", "output": ["y"]}, "output is list", id="alpaca-list-output"),
        pytest.param({"instruction": "x", "input": 3, "output": "y"}, "input is int", id="alpaca-int-input"),
        pytest.param({"conversations": "hi"}, "conversations is not a list", id="sharegpt-not-list"),
        pytest.param({"conversations": {"from": "human"}}, "conversations is not a list", id="sharegpt-dict"),
        pytest.param({"conversations": []}, "empty conversation", id="sharegpt-empty"),
        pytest.param({"conversations": ["hi"]}, "not an object", id="sharegpt-turn-not-object"),
        pytest.param(
            {"conversations": [{"from": "alien", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]},
            "unknown role 'alien'",
            id="sharegpt-unknown-role",
        ),
        pytest.param(
            {"conversations": [{"value": "Hi"}, {"from": "gpt", "value": "Yo"}]},
            "unknown role",
            id="sharegpt-missing-role",
        ),
        pytest.param(
            {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "  "}]},
            "empty assistant turn",
            id="sharegpt-ws-content",
        ),
        pytest.param(
            {"conversations": [{"from": "human", "value": 12}, {"from": "gpt", "value": "Yo"}]},
            "user turn is int, not text",
            id="sharegpt-int-content",
        ),
        pytest.param(
            {"conversations": [{"from": "human", "value": "Hi"}, {"from": "human", "value": "Hello?"}]},
            "no assistant turn",
            id="sharegpt-no-assistant",
        ),
        pytest.param(
            {"conversations": [{"from": "system", "value": "S"}, {"from": "gpt", "value": "Yo"}]},
            "no user turn",
            id="sharegpt-no-user",
        ),
        pytest.param({"messages": "hello"}, "messages is not a list", id="messages-not-list"),
        pytest.param({"messages": None}, "messages is not a list", id="messages-null"),
        pytest.param({"messages": []}, "empty conversation", id="messages-empty"),
        pytest.param({"messages": [["user", "hi"]]}, "not an object", id="messages-turn-not-object"),
        pytest.param({"messages": [_m("human", "Hi"), _m("assistant", "Yo")]}, "unknown role 'human'",
                     id="messages-unknown-role"),
        pytest.param({"messages": [{"content": "Hi"}, _m("assistant", "Yo")]}, "unknown role None",
                     id="messages-missing-role"),
        pytest.param({"messages": [_m("user", "Hi"), {"role": "assistant", "content": 5}]},
                     "assistant message is int, not text", id="messages-int-content"),
        pytest.param({"messages": [_m("user", "Hi"), {"role": "assistant", "content": [{"text": "x"}]}]},
                     "assistant message is list, not text", id="messages-list-content"),
        pytest.param({"messages": [_m("user", "Hi"), {"role": "assistant"}]},
                     "assistant message is NoneType", id="messages-missing-content"),
        pytest.param({"messages": [_m("user", ""), _m("assistant", "Yo")]}, "empty user message",
                     id="messages-empty-content"),
        pytest.param({"messages": [_m("user", "Hi"), _m("assistant", "\n \t")]}, "empty assistant message",
                     id="messages-ws-content"),
        pytest.param({"messages": [_m("user", "Hi")]}, "no assistant turn", id="messages-no-assistant"),
        pytest.param({"messages": [_m("system", "S")]}, "no assistant turn", id="messages-system-only"),
        pytest.param({"messages": [_m("assistant", "A")]}, "no user turn", id="messages-no-user"),
        pytest.param({"messages": [_m("system", "S"), _m("assistant", "A"), _m("user", "Q")]}, "no user turn",
                     id="messages-user-only-after-last-assistant"),
    ],
)
def test_bad_rows(row: Any, reason: str) -> None:
    with pytest.raises(BadRow) as info:
        normalize(row)
    assert reason in str(info.value)


def test_bad_row_is_a_value_error() -> None:
    assert issubclass(BadRow, ValueError)


@pytest.mark.parametrize("role", [["user"], {"r": "user"}], ids=["list-role", "dict-role"])
def test_unhashable_role_is_a_bad_row(role: Any) -> None:
    with pytest.raises(BadRow, match="unknown role"):
        normalize({"messages": [{"role": role, "content": "Hi"}, _m("assistant", "Yo")]})


# ---------------------------------------------------------------------------------------------------------------
# Property: normalize returns a valid conversation or raises BadRow, nothing else
# ---------------------------------------------------------------------------------------------------------------

_KEYS = st.sampled_from(
    ["messages", "conversations", "instruction", "input", "output", "system", "role", "content", "from", "value"]
) | st.text(max_size=4)
_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=6)
    | st.sampled_from(["user", "assistant", "system", "human", "gpt", "GPT", "bard", " ", "", "\n"])
)
JSON_LIKE = st.recursive(
    _LEAVES,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_KEYS, children, max_size=5),
    max_leaves=25,
)


def _check_result(row: Any) -> None:
    try:
        messages = normalize(row)
    except BadRow as e:
        assert str(e)  # a reason is always given
        return
    assert isinstance(messages, list) and messages
    for m in messages:
        assert set(m) == {"role", "content"}
        assert m["role"] in {"system", "user", "assistant"}
        assert isinstance(m["content"], str) and m["content"].strip()
    assert messages[-1]["role"] == "assistant"
    assert any(m["role"] == "user" for m in messages)


@settings(max_examples=400, deadline=None)
@given(JSON_LIKE)
def test_normalize_valid_or_bad_row(row: Any) -> None:
    _check_result(row)


_TURN = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant", "system"]) | _LEAVES | st.lists(_LEAVES, max_size=2),
        "content": st.text(max_size=5) | st.integers() | st.none(),
    }
)
_SHAREGPT_TURN = st.fixed_dictionaries({"from": _LEAVES, "value": _LEAVES})


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.builds(lambda ts: {"messages": ts}, st.lists(_TURN, max_size=6)),
        st.builds(lambda ts: {"conversations": ts}, st.lists(_SHAREGPT_TURN, max_size=6)),
        st.fixed_dictionaries({"instruction": _LEAVES, "output": _LEAVES, "input": _LEAVES, "system": _LEAVES}),
    )
)
def test_normalize_well_shaped_rows(row: dict[str, Any]) -> None:
    """Rows in a known shape reach the per-turn checks far more often than arbitrary JSON does."""
    _check_result(row)
