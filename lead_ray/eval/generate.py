"""Generation-based exact match: does the model's greedy answer equal the reference reply?

NLL says how likely the reference is; exact match says whether the model actually produces it, which is what a
user of an arithmetic or short-answer task sees. Prompts are rendered with the chat template and
`add_generation_prompt=True`, tokenized without extra special tokens (as the pool is), left-padded and decoded
greedily in batches with Hugging Face `generate` (or with vLLM: `lead_ray.eval.generate_vllm`, same prompt ids,
same decoding of the reply).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

import torch

Messages = list[dict[str, str]]

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def normalize_answer(text: str) -> str:
    """Strip and collapse runs of whitespace, so formatting noise is not a wrong answer."""
    return " ".join(text.split())


def last_number(text: str) -> str | None:
    """The last number in `text` in canonical form ("1,200.50" -> "1200.5"), or None: arithmetic answers are
    right when the final number is, whatever words surround it."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        value = Decimal(found[-1].replace(",", ""))
    except InvalidOperation:
        return None
    return format(value.normalize() + 0, "f")  # + 0 turns -0 into 0


def split_prompt(messages: Messages) -> tuple[Messages, str] | None:
    """(prompt messages, reference reply) of a single-turn conversation: system turns, then exactly one user turn
    and one assistant turn, the assistant last. None for anything else (multi-turn answers are not one string)."""
    roles = [m.get("role") for m in messages]
    if roles.count("user") != 1 or roles.count("assistant") != 1 or roles[-1] != "assistant" or roles[-2] != "user":
        return None
    if any(r != "system" for r in roles[:-2]):
        return None
    return [dict(m) for m in messages[:-1]], str(messages[-1]["content"])


def prompt_ids(tokenizer, prompts: list[Messages]) -> list[list[int]]:
    """Token ids of each chat prompt, rendered with `add_generation_prompt=True` and tokenized without extra
    special tokens (as the pool is). Every generation backend starts from these ids, so they all see the same
    tokens."""
    return [tokenizer(tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True),
                      add_special_tokens=False)["input_ids"] for p in prompts]


def stop_ids(tokenizer, generation_eos: Any = None) -> set[int]:
    """Token ids that end a reply: the tokenizer's end-of-sequence plus the model's generation-config ones."""
    eos = {tokenizer.eos_token_id} | set(_as_list(generation_eos))
    eos.discard(None)
    return eos


def decode_reply(tokenizer, new_ids: list[int], eos: set[int]) -> str:
    """Generated ids as text: cut at the first end-of-sequence id, special tokens dropped; shared so that every
    backend's text is decoded the same way."""
    cut = next((k for k, t in enumerate(new_ids) if t in eos), len(new_ids))
    return tokenizer.decode(new_ids[:cut], skip_special_tokens=True)


def greedy_generate(model, tokenizer, prompts: list[Messages], batch_size: int = 8, max_new_tokens: int = 32
                    ) -> list[str]:
    """Greedy continuations of each chat prompt (special tokens dropped, cut at end-of-sequence)."""
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = stop_ids(tokenizer, getattr(model.generation_config, "eos_token_id", None))
    encoded = prompt_ids(tokenizer, prompts)
    outputs: list[str] = []
    was_training = model.training
    model.eval()
    try:
        for s in range(0, len(encoded), batch_size):
            chunk = encoded[s : s + batch_size]
            width = max(len(ids) for ids in chunk)
            input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, ids in enumerate(chunk):  # left padding: every prompt ends where generation starts
                input_ids[i, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
                attention[i, width - len(ids):] = 1
            with torch.inference_mode():
                out = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                     max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                     pad_token_id=pad_id, eos_token_id=sorted(eos))
            outputs.extend(decode_reply(tokenizer, row, eos) for row in out[:, width:].tolist())
    finally:
        model.train(was_training)
    return outputs


def score_answers(generated: list[str], references: list[str]) -> dict[str, Any]:
    """Exact match of normalised text, and of the last number over the `n_number` rows whose reference has one;
    per-row verdicts in `examples`."""
    examples = []
    for gen, ref in zip(generated, references, strict=True):
        num = last_number(ref)
        examples.append({"reference": ref, "generated": gen, "correct": normalize_answer(gen) == normalize_answer(ref),
                         "correct_number": num is not None and last_number(gen) == num})
    n, n_number = len(examples), sum(last_number(ref) is not None for ref in references)
    return {"accuracy": sum(e["correct"] for e in examples) / n if n else float("nan"),
            "accuracy_number": sum(e["correct_number"] for e in examples) / n_number if n_number else float("nan"),
            "n": n, "n_number": n_number, "examples": examples}


def exact_match(model, tokenizer, rows: list[tuple[Messages, str]], batch_size: int = 8, max_new_tokens: int = 32
                ) -> dict[str, Any]:
    """Greedy-decode each (prompt messages, reference) row and score it.

    `accuracy`: normalised generated text == normalised reference, over all `n` rows; `accuracy_number`: the last
    numbers agree (for arithmetic), over the `n_number` rows whose reference has a number; `examples`: every row's
    texts and verdicts.
    """
    generated = greedy_generate(model, tokenizer, [p for p, _ in rows], batch_size, max_new_tokens)
    return score_rows(rows, generated)


def score_rows(rows: list[tuple[Messages, str]], generated: list[str]) -> dict[str, Any]:
    """`score_answers` of the generated replies to `rows`, each example also naming its (last) prompt turn; shared
    by the generation backends."""
    out = score_answers(generated, [r for _, r in rows])
    for e, (prompt, _) in zip(out["examples"], rows, strict=True):
        e["prompt"] = prompt[-1]["content"]
    return out


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
