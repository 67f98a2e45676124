"""The real-text pool of the quality benchmark with a real language model (`bench/quality.py --model smollm2`).

Real rows from the bundled demo files in `lead_ray/demo_data` (see its PROVENANCE.md): paragraphs of CPython's
reference manual (`pydoc_topics.jsonl`, Alpaca), stdlib docstring summaries (`stdlib_docstrings.json`, ShareGPT)
and generated arithmetic with exact answers (`arithmetic.jsonl`, messages). Only short rows are used (prompt +
answer at most MAX_ROW_CHARS characters), so that a row fits in 128 tokens of SmolLM2's chat template.

Into the training rows go injected, recorded noise and near-duplicates; the `source` field names what a row is:

- clean rows keep their real source: `pydoc_topics`, `stdlib_docstrings`, `arithmetic`;
- `noisy_wrong_answer`: an arithmetic question whose answer has a wrong number;
- `noisy_mismatch`: a documentation question paired with another row's (documentation) answer;
- `noisy_junk`: any question answered by random characters;
- `dup_pydoc_topics`, `dup_stdlib_docstrings`, `dup_arithmetic`: a few rows, each repeated about eight times with
  trivial variations of the question (little to learn after the first).

About 22% of the training rows are noisy and 10% near-duplicates. The held-out rows (`"split": "eval"`) are clean
rows only, about 40% of them arithmetic (whose answers are exact, so exact match means something); no message text
of a held-out row occurs in training. Every row is in `messages` format. Everything is drawn from one
`random.Random(seed)`, so a pool is the same on every machine (with the same demo files).
"""

from __future__ import annotations

import json
import random
import re
import string
from pathlib import Path

DEMO_DATA = Path(__file__).resolve().parent.parent / "lead_ray" / "demo_data"
CLEAN = ("arithmetic", "pydoc_topics", "stdlib_docstrings")
DOCS = ("pydoc_topics", "stdlib_docstrings")
NOISY = {"noisy_wrong_answer", "noisy_mismatch", "noisy_junk"}
DUPLICATE = {f"dup_{s}" for s in CLEAN}
MAX_ROW_CHARS = 280  # prompt + answer characters; ~100 tokens of content, plus ~30 of SmolLM2's chat template
NOISY_SHARE = 0.22
NOISE_MIX = {"noisy_wrong_answer": 0.4, "noisy_mismatch": 0.35, "noisy_junk": 0.25}  # shares of the noisy rows
DUPLICATE_SHARE = 0.10
DUP_CLUSTER = 8  # rows per near-duplicate cluster (one original row and its variations)
EVAL_ARITHMETIC_SHARE = 0.4

Messages = list[dict[str, str]]

# trivial variations of a question: a near-duplicate cluster takes distinct ones (the first is the question itself)
VARIATIONS = (
    lambda q: q,
    lambda q: "Please " + q[:1].lower() + q[1:],
    lambda q: q + " Thanks.",
    lambda q: "Quick question: " + q,
    lambda q: q + " Please answer briefly.",
    lambda q: "Q: " + q,
    lambda q: "Hi! " + q,
    lambda q: "Can you help? " + q,
    lambda q: q + " Thank you!",
    lambda q: "Hello. " + q,
    lambda q: q.lower(),
    lambda q: "I have a question. " + q,
)


def _text_len(messages: Messages) -> int:
    return sum(len(m["content"]) for m in messages if m["role"] != "system")


def load_demo_rows(folder: Path = DEMO_DATA) -> dict[str, list[Messages]]:
    """The demo files' rows in messages form, per source, in file order; short rows only, and no two rows of a
    source with the same question or the same answer."""
    pydoc = [[{"role": "user", "content": r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else "")},
              {"role": "assistant", "content": r["output"]}]
             for r in map(json.loads, (folder / "pydoc_topics.jsonl").read_text().splitlines())]
    stdlib = [[{"role": {"human": "user", "gpt": "assistant"}[t["from"]], "content": t["value"]}
               for t in r["conversations"]] for r in json.loads((folder / "stdlib_docstrings.json").read_text())]
    arithmetic = [[dict(m) for m in r["messages"]]
                  for r in map(json.loads, (folder / "arithmetic.jsonl").read_text().splitlines())]
    out = {}
    for source, rows in (("arithmetic", arithmetic), ("pydoc_topics", pydoc), ("stdlib_docstrings", stdlib)):
        kept, seen = [], set()
        for messages in rows:
            question, answer = messages[-2]["content"], messages[-1]["content"]
            if _text_len(messages) > MAX_ROW_CHARS or question in seen or answer in seen:
                continue
            seen.update((question, answer))
            kept.append(messages)
        out[source] = kept
    return out


def wrong_answer(answer: str, rng: random.Random) -> str:
    """The arithmetic answer with its result (the quotient, for a division) off by 1-20."""
    delta = rng.choice([-1, 1]) * rng.randint(1, 20)
    m = re.fullmatch(r"(.* is )(\d+)( remainder \d+)", answer)
    if m:
        q = int(m[2])
        return f"{m[1]}{q + delta if q + delta >= 0 else q + abs(delta)}{m[3]}"
    m = re.fullmatch(r"(.* = )(-?\d+)", answer)
    if not m:
        raise ValueError(f"not an arithmetic answer: {answer!r}")
    return f"{m[1]}{int(m[2]) + delta}"


def junk(rng: random.Random) -> str:
    """Random characters: letters, digits, punctuation and spaces, 20-60 of them (about 0.8 tokens each)."""
    chars = string.ascii_letters + string.digits + "     .,;:!?-()"
    return rng.choice(string.ascii_letters) + "".join(rng.choice(chars) for _ in range(rng.randint(19, 59))).rstrip()


def _row(messages: Messages, source: str, split: str) -> dict:
    return {"messages": messages, "source": source, "split": split}


def _with(messages: Messages, question: str | None = None, answer: str | None = None) -> Messages:
    out = [dict(m) for m in messages]
    if question is not None:
        out[-2]["content"] = question
    if answer is not None:
        out[-1]["content"] = answer
    return out


def _split(total: int, shares: dict[str, float]) -> dict[str, int]:
    """`total` split by `shares` (largest remainder), so the parts add up exactly."""
    raw = {k: total * v / sum(shares.values()) for k, v in shares.items()}
    out = {k: int(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: out[k] - raw[k])[: total - sum(out.values())]:
        out[k] += 1
    return out


def make_rows(n_train: int = 800, n_eval: int = 150, seed: int = 0, folder: Path = DEMO_DATA
              ) -> tuple[list[dict], list[dict]]:
    """(train rows, held-out rows). The training rows: NOISY_SHARE noisy rows (NOISE_MIX), DUPLICATE_SHARE
    near-duplicates in clusters of DUP_CLUSTER, the rest clean rows of the three sources in equal parts, shuffled.
    The held-out rows: EVAL_ARITHMETIC_SHARE arithmetic, the rest documentation rows, none sharing a message text
    with any training row."""
    rng = random.Random(seed)
    pools = load_demo_rows(folder)
    for rows in pools.values():
        rng.shuffle(rows)

    def take(source: str, n: int) -> list[Messages]:
        if len(pools[source]) < n:
            raise ValueError(f"{source}: {n} more short rows needed, {len(pools[source])} left; use a smaller pool")
        out, pools[source][:] = pools[source][:n], pools[source][n:]
        return out

    # held-out candidates first (a reserve, in case some share a text with a training row)
    eval_quota = {"arithmetic": round(EVAL_ARITHMETIC_SHARE * n_eval)}
    eval_quota.update(_split(n_eval - eval_quota["arithmetic"], dict.fromkeys(DOCS, 1.0)))
    eval_candidates = {s: take(s, q + q // 5 + 2) for s, q in eval_quota.items()}

    n_noisy, n_dup = round(NOISY_SHARE * n_train), round(DUPLICATE_SHARE * n_train)
    noisy = _split(n_noisy, NOISE_MIX)
    train: list[dict] = []
    for messages in take("arithmetic", noisy["noisy_wrong_answer"]):
        train.append(_row(_with(messages, answer=wrong_answer(messages[-1]["content"], rng)), "noisy_wrong_answer",
                          "train"))
    for i in range(noisy["noisy_mismatch"]):  # a docs question, the answer of another docs row (either source)
        (question_row,) = take(DOCS[i % 2], 1)
        donors = pools[rng.choice(DOCS)]
        room = MAX_ROW_CHARS - len(question_row[-2]["content"])
        j = next((j for j, d in enumerate(donors) if len(d[-1]["content"]) <= room), None)
        if j is None:
            raise ValueError("no documentation answer short enough for a mismatched row")
        train.append(_row(_with(question_row, answer=donors.pop(j)[-1]["content"]), "noisy_mismatch", "train"))
    for i in range(noisy["noisy_junk"]):
        (messages,) = take(CLEAN[i % 3], 1)
        train.append(_row(_with(messages, answer=junk(rng)), "noisy_junk", "train"))

    clusters = max(1, round(n_dup / DUP_CLUSTER)) if n_dup else 0
    sizes = _split(n_dup, {c: 1.0 for c in range(clusters)})
    for c in range(clusters):
        source = CLEAN[c % 3]
        (messages,) = take(source, 1)
        variants = [0, *rng.sample(range(1, len(VARIATIONS)), min(sizes[c], len(VARIATIONS)) - 1)]
        for k in range(sizes[c]):
            question = VARIATIONS[variants[k % len(variants)]](messages[-2]["content"])
            train.append(_row(_with(messages, question=question), f"dup_{source}", "train"))

    clean = _split(n_train - len(train), dict.fromkeys(CLEAN, 1.0))
    for source in CLEAN:
        train.extend(_row(m, source, "train") for m in take(source, clean[source]))
    rng.shuffle(train)

    seen = {" ".join(m["content"].split()) for r in train for m in r["messages"] if m["role"] != "system"}
    held_out = []
    for source, quota in eval_quota.items():
        fresh = [m for m in eval_candidates[source]
                 if not any(" ".join(t["content"].split()) in seen for t in m if t["role"] != "system")]
        if len(fresh) < quota:
            raise ValueError(f"{source}: only {len(fresh)} held-out rows share no text with training, {quota} needed")
        held_out.extend(_row(m, source, "eval") for m in fresh[:quota])
    rng.shuffle(held_out)
    return train, held_out


def counts_of(train: list[dict], held_out: list[dict]) -> dict[str, int]:
    """Row counts: train, eval, noisy, duplicate, eval_arithmetic, and per training source."""
    out = {"train": len(train), "eval": len(held_out), "noisy": sum(r["source"] in NOISY for r in train),
           "duplicate": sum(r["source"] in DUPLICATE for r in train),
           "eval_arithmetic": sum(r["source"] == "arithmetic" for r in held_out)}
    for r in train:
        out[f"train_{r['source']}"] = out.get(f"train_{r['source']}", 0) + 1
    return out


def write_pool(folder: Path, n_train: int = 800, n_eval: int = 150, seed: int = 0) -> dict[str, int]:
    """Write `train.jsonl` and `eval.jsonl` into `folder`; returns the row counts (`counts_of`)."""
    train, held_out = make_rows(n_train, n_eval, seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.jsonl", train), ("eval.jsonl", held_out)):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        path = folder / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:  # unchanged files keep their stamps
            path.write_text(text, encoding="utf-8")
    return counts_of(train, held_out)
