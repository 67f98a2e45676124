"""The quality benchmark's pool: task families with exact answers and known structure.

- learnable families at graded difficulty (level 1-3): copy, successor, add, uppercase, reverse;
- near-duplicate families: a handful of texts repeated with trivial variations (little to learn after a few);
- noisy families: the same prompts as `add` and `reverse`, with wrong answers (nothing learnable to find).

The held-out eval set (rows marked `"split": "eval"`) covers only the learnable families, with no row whose text is
also in the training pool. Everything is seeded, so a pool is the same on every machine.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable
from pathlib import Path

WORDS = ("cat dog sun map cup hat red box pen key bus egg ant fox owl jam ice kit log net oak pig rug "
         "sky toy van web yak zip arm bag bed car fan gum hen ink jar leg mud nut pot rat sea tea").split()
Row = tuple[str, str]  # (instruction, answer)


def _letters(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(n))


def _number(rng: random.Random, digits: int) -> int:
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)


def copy(rng: random.Random, level: int) -> Row:
    words = " ".join(rng.choice(WORDS) for _ in range(level))
    return f"Repeat exactly: {words}", words


def successor(rng: random.Random, level: int) -> Row:
    n = _number(rng, level)
    return f"What number comes after {n}?", str(n + 1)


def add(rng: random.Random, level: int) -> Row:
    a, b = _number(rng, level), _number(rng, level)
    return f"What is {a} + {b}?", str(a + b)


def uppercase(rng: random.Random, level: int) -> Row:
    word = " ".join(rng.choice(WORDS) for _ in range(level))
    return f"Write in capitals: {word}", word.upper()


def reverse(rng: random.Random, level: int) -> Row:
    word = _letters(rng, level + 2)
    return f"Reverse the letters: {word}", word[::-1]


def dup_greeting(rng: random.Random, level: int) -> Row:
    name = rng.choice(["Ann", "Bob", "Cy"])
    return rng.choice(["Say hello to {}.", "Please say hello to {}.", "Greet {}."]).format(name), f"Hello, {name}!"


def dup_thanks(rng: random.Random, level: int) -> Row:
    return rng.choice(["Say thank you.", "Say thanks.", "Please say thank you."]), "Thank you!"


def noisy_add(rng: random.Random, level: int) -> Row:
    prompt, answer = add(rng, level)
    return prompt, str(int(answer) + rng.choice([-1, 1]) * rng.randint(1, 50))


def noisy_reverse(rng: random.Random, level: int) -> Row:
    prompt, answer = reverse(rng, level)
    return prompt, _letters(rng, len(answer))


LEARNABLE: dict[str, Callable[[random.Random, int], Row]] = {
    "copy": copy, "successor": successor, "add": add, "uppercase": uppercase, "reverse": reverse}
DUPLICATE = {"dup_greeting": dup_greeting, "dup_thanks": dup_thanks}
NOISY = {"noisy_add": noisy_add, "noisy_reverse": noisy_reverse}
FAMILIES = {**LEARNABLE, **DUPLICATE, **NOISY}


def _row(family: str, instruction: str, answer: str, level: int, split: str) -> dict:
    return {"messages": [{"role": "user", "content": instruction}, {"role": "assistant", "content": answer}],
            "source": family, "level": level, "split": split}


def make_rows(per_family: int, eval_per_family: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train rows, eval rows): `per_family` rows of every family (levels 1-3 in equal shares, shuffled) and
    `eval_per_family` rows of each learnable family whose (instruction, answer) never occurs in training."""
    rng = random.Random(seed)
    train, seen = [], set()
    for family, make in FAMILIES.items():
        for i in range(per_family):
            level = 1 + i % 3
            instruction, answer = make(rng, level)
            seen.add((instruction, answer))
            train.append(_row(family, instruction, answer, level, "train"))
    rng.shuffle(train)
    held_out = []
    for family, make in LEARNABLE.items():
        made, tries = 0, 0
        while made < eval_per_family and tries < 100 * eval_per_family:
            tries += 1
            level = 1 + tries % 3  # level 1 of a small family may be all seen: then its eval rows are harder
            instruction, answer = make(rng, level)
            if (instruction, answer) not in seen:
                seen.add((instruction, answer))
                held_out.append(_row(family, instruction, answer, level, "eval"))
                made += 1
    return train, held_out


def pretraining_rows(n: int, seed: int = 1) -> list[dict]:
    """Rows for the small base model's pre-training: every learnable family at level 1 only, plus the chat format.
    The base model then knows the format and the easy cases, so its NLL (IU) and IFD mean something."""
    rng = random.Random(seed)
    families = list(LEARNABLE.values())
    return [_row("pretrain", *families[i % len(families)](rng, 1), 1, "train") for i in range(n)]


def write_pool(folder: Path, per_family: int, eval_per_family: int, seed: int = 0) -> dict[str, int]:
    """Write `train.jsonl` and `eval.jsonl` into `folder`; returns row counts."""
    train, held_out = make_rows(per_family, eval_per_family, seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.jsonl", train), ("eval.jsonl", held_out)):
        text = "".join(json.dumps(r) + "\n" for r in rows)
        path = folder / name
        if not path.exists() or path.read_text() != text:  # unchanged files keep their stamps: prep is reused
            path.write_text(text)
    return {"train": len(train), "eval": len(held_out)}
