"""Chat-template tokenization with a mask that supervises only assistant tokens."""

from __future__ import annotations

import numpy as np

from lead_ray.data.formats import BadRow


def _render(tokenizer, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def tokenize_messages(tokenizer, messages: list[dict[str, str]], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """input_ids and assistant mask (1 where the token is part of an assistant reply, incl. its end tag).

    Assistant spans are found by rendering each prefix of the conversation, so any chat template whose
    renderings are prefix-stable works, with no {% generation %} markers needed.
    """
    full = _render(tokenizer, messages, False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start = len(_render(tokenizer, messages[:i], True))
        through = full if i == len(messages) - 1 else _render(tokenizer, messages[: i + 1], False)
        if not full.startswith(through):
            raise BadRow("chat template is not prefix-stable for this conversation")
        spans.append((start, len(through)))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int32)
    if len(ids) > max_length:
        raise BadRow(f"too many tokens ({len(ids)} > max_length {max_length})")
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    mask = np.zeros(len(ids), dtype=np.int8)
    for start, end in spans:
        mask |= ((offsets[:, 0] >= start) & (offsets[:, 0] < end) & (offsets[:, 1] > offsets[:, 0])).astype(np.int8)
    if not mask.any():
        raise BadRow("no assistant tokens after tokenization")
    if mask[0]:
        raise BadRow("first token is an assistant token; nothing to condition on")
    return ids, mask
