"""Tests for `lead_ray.data.tokenize.tokenize_messages` with the builtin tiny tokenizer, and model path errors.

Expected strings are ChatML written out by hand:
  <|im_start|>{role}\\n{content}<|im_end|>\\n   per message.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lead_ray.data.formats import BadRow
from lead_ray.data.tokenize import tokenize_messages
from lead_ray.models.load import ModelError, load_tokenizer, resolve_model_path

CACHE_DIR = Path("~/.cache/lead-ray").expanduser()
END = "<|im_end|>\n"


@pytest.fixture(scope="module")
def tok() -> Any:
    return load_tokenizer(resolve_model_path("builtin:tiny", CACHE_DIR))


def _m(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def _turn(role: str, content: str) -> str:
    return f"<|im_start|>{role}\n{content}<|im_end|>\n"


def _runs(mask: np.ndarray) -> list[tuple[int, int, int]]:
    """Maximal runs of equal mask values as (value, start, end)."""
    out: list[tuple[int, int, int]] = []
    start = 0
    for i in range(1, len(mask) + 1):
        if i == len(mask) or mask[i] != mask[start]:
            out.append((int(mask[start]), start, i))
            start = i
    return out


def _decode(tok: Any, ids: np.ndarray) -> str:
    return tok.decode([int(i) for i in ids], skip_special_tokens=False)


# ---------------------------------------------------------------------------------------------------------------
# One turn
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    ["It is 4.", "café au lait, naïve ✓", "line one\nline two", " leading space", "trailing space ", "\nX"],
)
def test_one_turn_masks_exactly_the_answer_and_end_tag(tok: Any, answer: str) -> None:
    messages = [_m("user", "What is 2+2?"), _m("assistant", answer)]
    ids, mask = tokenize_messages(tok, messages, max_length=256)
    assert _decode(tok, ids[mask == 1]) == answer + END
    # the prompt, including the assistant header, is an unmasked prefix; the answer a masked suffix
    runs = _runs(mask)
    assert [v for v, _, _ in runs] == [0, 1]
    _, prompt_start, prompt_end = runs[0]
    assert _decode(tok, ids[prompt_start:prompt_end]) == _turn("user", "What is 2+2?") + "<|im_start|>assistant\n"
    assert mask[-1] == 1 and _decode(tok, ids[-1:]) == "\n"
    assert _decode(tok, ids[-2:-1]) == "<|im_end|>"


def test_prompt_tokens_not_masked(tok: Any) -> None:
    messages = [_m("system", "Be brief."), _m("user", "Name a colour."), _m("assistant", "Blue")]
    ids, mask = tokenize_messages(tok, messages, max_length=256)
    prompt = _turn("system", "Be brief.") + _turn("user", "Name a colour.") + "<|im_start|>assistant\n"
    assert _decode(tok, ids[mask == 0]) == prompt
    assert _decode(tok, ids[mask == 1]) == "Blue" + END
    assert mask[0] == 0


def test_shapes_and_dtypes(tok: Any) -> None:
    ids, mask = tokenize_messages(tok, [_m("user", "Hi"), _m("assistant", "Hello")], max_length=64)
    assert ids.dtype == np.int32
    assert mask.dtype == np.int8
    assert ids.ndim == 1 and mask.ndim == 1
    assert len(ids) == len(mask) > 0
    assert set(np.unique(mask).tolist()) == {0, 1}


# ---------------------------------------------------------------------------------------------------------------
# Two turns
# ---------------------------------------------------------------------------------------------------------------


def test_two_turns_mask_both_replies_and_neither_user_turn(tok: Any) -> None:
    messages = [_m("user", "First question?"), _m("assistant", "First answer."),
                _m("user", "Second question?"), _m("assistant", "Second answer.")]
    ids, mask = tokenize_messages(tok, messages, max_length=256)
    runs = _runs(mask)
    assert [v for v, _, _ in runs] == [0, 1, 0, 1]
    texts = [_decode(tok, ids[a:b]) for _, a, b in runs]
    assert texts == [
        _turn("user", "First question?") + "<|im_start|>assistant\n",
        "First answer." + END,
        _turn("user", "Second question?") + "<|im_start|>assistant\n",
        "Second answer." + END,
    ]


# ---------------------------------------------------------------------------------------------------------------
# Length limit
# ---------------------------------------------------------------------------------------------------------------


def test_max_length_boundary(tok: Any) -> None:
    messages = [_m("user", "Tell me about Python lists."), _m("assistant", "They are mutable sequences.")]
    ids, _ = tokenize_messages(tok, messages, max_length=1024)
    n = len(ids)
    ids_exact, _ = tokenize_messages(tok, messages, max_length=n)  # exactly at the limit is fine
    assert np.array_equal(ids_exact, ids)
    with pytest.raises(BadRow, match="too many tokens"):
        tokenize_messages(tok, messages, max_length=n - 1)
    with pytest.raises(BadRow, match="too many tokens"):
        tokenize_messages(tok, messages, max_length=4)


def test_a_huge_row_is_refused_before_tokenizing(tok: Any) -> None:
    import time

    from lead_ray.data.tokenize import max_token_chars

    longest = max_token_chars(tok)
    assert longest == max(len(t) for t in tok.get_vocab()) >= 1
    huge = [_m("user", "Summarise."), _m("assistant", "word " * 4_000_000)]  # 20 MB of answer
    t0 = time.perf_counter()
    with pytest.raises(BadRow, match=r"too many tokens \(20000010 characters cannot fit max_length 256\)"):
        tokenize_messages(tok, huge, max_length=256)
    assert time.perf_counter() - t0 < 1.0  # counted, not tokenized (tokenizing it takes many seconds)


@pytest.mark.parametrize("length", [16, 64, 256])
def test_the_character_bound_never_refuses_a_row_that_fits(tok: Any, length: int) -> None:
    """The bound is a lower bound on tokens: every row that fits max_length passes it, whatever its text."""
    from lead_ray.data.tokenize import max_token_chars

    rng = np.random.default_rng(length)
    alphabet = list("abc xyz\n\t  ====----") + ["é", "日本", "🙂", "    "]
    for _ in range(200):
        answer = "".join(rng.choice(alphabet, size=int(rng.integers(1, 3 * length))))
        messages = [_m("user", "Q"), _m("assistant", answer)]
        chars = sum(len(m["content"]) for m in messages)
        try:
            ids, _ = tokenize_messages(tok, messages, max_length=10**9)
        except BadRow:
            continue  # e.g. no assistant tokens: not about length
        if len(ids) <= length:
            assert chars <= length * max_token_chars(tok)


# ---------------------------------------------------------------------------------------------------------------
# Prefix consistency with the chat template
# ---------------------------------------------------------------------------------------------------------------


def test_template_renders_hand_written_chatml(tok: Any) -> None:
    messages = [_m("user", "Q"), _m("assistant", "A")]
    assert tok.apply_chat_template(messages, tokenize=False) == _turn("user", "Q") + _turn("assistant", "A")


def test_decoded_tokens_concatenate_to_the_rendered_template(tok: Any) -> None:
    messages = [_m("system", "You answer arithmetic."), _m("user", "What is 12 * 3?"), _m("assistant", "36"),
                _m("user", "And 36 / 4?"), _m("assistant", "9, since 4 * 9 = 36.")]
    ids, _ = tokenize_messages(tok, messages, max_length=512)
    rendered = tok.apply_chat_template(messages, tokenize=False)
    assert "".join(_decode(tok, ids[i:i + 1]) for i in range(len(ids))) == rendered


def test_whole_decode_equals_rendered_template_with_unicode(tok: Any) -> None:
    messages = [_m("user", "Über café? 日本"), _m("assistant", "Ja — oui ✓")]
    ids, mask = tokenize_messages(tok, messages, max_length=512)
    assert _decode(tok, ids) == tok.apply_chat_template(messages, tokenize=False)
    assert _decode(tok, ids[mask == 1]) == "Ja — oui ✓" + END


_CONTENT = st.text(alphabet=string.ascii_letters + string.digits + " .,?!'\n\t-:é日", min_size=1, max_size=40).filter(
    lambda s: bool(s.strip())
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_CONTENT, _CONTENT), min_size=1, max_size=3))
def test_property_masked_runs_are_the_replies(tok: Any, turns: list[tuple[str, str]]) -> None:
    messages: list[dict[str, str]] = []
    for question, answer in turns:
        messages += [_m("user", question), _m("assistant", answer)]
    ids, mask = tokenize_messages(tok, messages, max_length=4096)
    assert _decode(tok, ids) == "".join(_turn(m["role"], m["content"]) for m in messages)
    masked = [_decode(tok, ids[a:b]) for v, a, b in _runs(mask) if v == 1]
    assert masked == [answer + END for _, answer in turns]


# ---------------------------------------------------------------------------------------------------------------
# resolve_model_path errors
# ---------------------------------------------------------------------------------------------------------------


def test_missing_absolute_path(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model_path(str(tmp_path / "no" / "such" / "model"), tmp_path)


def test_missing_relative_path(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model_path("./zz-no-such-model-folder", tmp_path)


def test_missing_hub_id_when_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model_path("zz-no-such-org/zz-no-such-model", tmp_path)


def test_hub_id_returned_as_is_when_online(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert resolve_model_path("zz-no-such-org/zz-no-such-model", tmp_path) == "zz-no-such-org/zz-no-such-model"


def test_folder_without_config_json(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelError, match="config.json"):
        resolve_model_path(str(tmp_path), tmp_path)


def test_folder_with_config_json_resolves(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert resolve_model_path(str(tmp_path / "m"), tmp_path) == str((tmp_path / "m").resolve())


def test_unknown_builtin(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="builtin:foo"):
        resolve_model_path("builtin:foo", tmp_path)
    assert not (tmp_path / "models").exists()  # nothing built for an unknown name


def test_builtin_tiny_is_cached() -> None:
    path = resolve_model_path("builtin:tiny", CACHE_DIR)
    assert Path(path) == CACHE_DIR / "models" / "tiny-llama-v1"
    assert (Path(path) / "config.json").is_file()
    assert resolve_model_path("builtin:tiny", CACHE_DIR) == path
