"""Generate the bundled demo instruction pool in ``lead_ray/demo_data/``, fully offline.

Sources: CPython's ``pydoc_data.topics`` (Alpaca rows), docstrings of a fixed list of standard
library modules (ShareGPT rows) and generated arithmetic with exact answers (messages rows), plus
a small file of deliberately malformed rows. Output is deterministic: rerunning with the same
CPython build gives byte-identical files. Usage: ``python scripts/make_demo_pool.py``.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import platform
import random
import re
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent.parent / "lead_ray" / "demo_data"
MAX_CHARS = 350
MIN_PARAGRAPH = 40
MIN_DOCSTRING = 40
DOCSTRING_ROWS = 1200
SYSTEM_PROMPT = "You are a careful calculator."

# Fixed, de-duplicated list of standard library modules whose docstrings are used.
STDLIB_MODULES: tuple[str, ...] = (
    "abc", "argparse", "array", "base64", "bisect", "calendar", "cmath", "codecs", "collections",
    "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib",
    "email.utils", "enum", "fnmatch", "fractions", "functools", "gettext", "glob", "gzip",
    "hashlib", "heapq", "hmac", "html", "http.client", "inspect", "io", "ipaddress", "itertools",
    "json", "locale", "logging", "math", "numbers", "operator", "os.path", "pathlib", "platform",
    "pprint", "queue", "random", "re", "sched", "secrets", "shlex", "shutil", "statistics",
    "string", "struct", "subprocess", "sysconfig", "tarfile", "tempfile", "textwrap", "threading",
    "time", "traceback", "typing", "unicodedata", "urllib.parse", "uuid", "warnings", "weakref",
    "zipfile", "zlib",
)  # fmt: skip

TOPIC_TEMPLATES: tuple[str, ...] = (
    "Explain this aspect of Python's {title} (part {n}).",
    "In Python, what does the reference manual say about {title} (part {n})?",
    "Summarize part {n} of the Python reference documentation on {title}.",
    "What should I know about {title} in Python? (part {n})",
)

DOC_TEMPLATES: tuple[str, ...] = (
    "What does the Python {kind} `{name}` do?",
    "Briefly describe the {kind} `{name}` from the Python standard library.",
    "I found `{name}` in some Python code. What is this {kind} for?",
    "Explain what `{name}` is used for in Python.",
)

# Deliberately malformed rows for malformed.jsonl, one distinct problem per line, in file order:
#  1. truncated JSON line (the closing brace is missing), so it does not parse at all
#  2. an object with no recognised format: {"foo": 1}
#  3. Alpaca row whose output is the empty string
#  4. messages row with a user turn but no assistant turn
#  5. messages row whose first turn has an unknown role ("wizard"), then a valid user/assistant pair
#  6. ShareGPT row whose gpt "value" is an integer, not a string
#  7. messages row whose list is empty
#  8. a JSON list at the top level instead of an object
#  9. Alpaca row whose instruction is whitespace only
# 10. messages row whose user content is null
# 11. messages row whose "messages" field is a plain string, not a list of turns
# 12. Alpaca row whose instruction is a list of strings instead of a string
MALFORMED_LINES: tuple[str, ...] = (
    '{"instruction": "Add 2 and 2.", "input": "", "output": "2 + 2 = 4"',
    '{"foo": 1}',
    '{"instruction": "Name a prime number.", "input": "", "output": ""}',
    '{"messages": [{"role": "user", "content": "What is 3 + 4?"}]}',
    '{"messages": [{"role": "wizard", "content": "Answer in riddles."}, '
    '{"role": "user", "content": "What is 5 + 5?"}, {"role": "assistant", "content": "5 + 5 = 10"}]}',
    '{"conversations": [{"from": "human", "value": "What is 6 times 7?"}, {"from": "gpt", "value": 42}]}',
    '{"messages": []}',
    '[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]',
    '{"instruction": "   \\t  ", "input": "", "output": "Hello there."}',
    '{"messages": [{"role": "user", "content": null}, {"role": "assistant", "content": "OK."}]}',
    '{"messages": "user: What is 1 + 1?\\nassistant: 2"}',
    '{"instruction": ["Translate", "hello"], "input": "", "output": "bonjour"}',
)

_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]?(?=\s)")
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "cf.", "approx.")
_HEADING = re.compile(r"\n[*=\-^~]{3,}\s*$")
_SIGNATURE = re.compile(r"^[\w.]+\(.*\)(\s*->.*)?$")
_FOOTNOTE = re.compile(r"^\[\d+\] | \[\d+\](?=[\s.,;:]|$)")
_SIGNATURE_START = re.compile(r"^[\w.]+\(")  # "D.count(value) -- ...", "repeat(object) -> ..."
_KEEP_CASE = frozenset({"Python", "I/O"})


def clean(text: str) -> str:
    """Replace control characters (other than newline) with spaces and strip the ends."""
    return _CONTROL.sub(" ", text).strip()


def squash(text: str) -> str:
    """Collapse all runs of whitespace (including newlines) into single spaces."""
    text = re.sub(r"(\w)-\n[ \t]*(\w)", r"\1-\2", clean(text))  # rejoin words hyphenated at a line end
    return " ".join(text.split())


def truncate(text: str, limit: int = MAX_CHARS) -> str:
    """Shorten ``text`` to at most ``limit`` chars, at a sentence end if one is near, else a word."""
    if len(text) <= limit:
        return text
    ends = [
        m.end()
        for m in _SENTENCE_END.finditer(text[: limit + 1])
        if m.end() <= limit and not text[: m.end()].endswith(_ABBREVIATIONS)
    ]
    if ends and ends[-1] >= limit * 0.4:
        return text[: ends[-1]].rstrip()
    head = text[: limit - 3]
    cut = head.rfind(" ")
    head = head[:cut] if cut > 0 else head
    return head.rstrip(" ,;:-") + "..."


def lower_title(title: str) -> str:
    """Lower-case the capitalised words of a topic title so it reads well mid-sentence."""
    words = []
    for word in title.split(" "):
        plain = word.strip("()\"'")
        if plain and plain not in _KEEP_CASE and plain[:1].isupper() and plain[1:].islower():
            word = word.replace(plain, plain.lower(), 1)
        words.append(word)
    return " ".join(words)


def topic_paragraphs(text: str) -> Iterator[tuple[str, str]]:
    """Yield ``(prose, code)`` pairs: each prose paragraph with the indented block(s) after it."""
    blocks = [b for b in re.split(r"\n[ \t]*\n", text.expandtabs(8)) if b.strip()]
    for i, block in enumerate(blocks):
        if block[0].isspace() or block.startswith(">>>") or _HEADING.search(block):
            continue
        code_blocks = []
        for nxt in blocks[i + 1 :]:
            if not nxt[0].isspace():
                break
            code_blocks.append(textwrap.dedent(nxt).strip("\n"))
        yield _FOOTNOTE.sub("", squash(block)), clean("\n\n".join(code_blocks))


def build_pydoc_topics(rng: random.Random) -> list[dict[str, str]]:
    """Alpaca rows from ``pydoc_data.topics``; shorter topics claim shared paragraphs first."""
    from pydoc_data.topics import topics

    seen: set[str] = set()
    rows = []
    for key in sorted(topics, key=lambda k: (len(topics[k]), k)):
        text = topics[key]
        title = lower_title(squash(text.split("\n", 1)[0]))
        if title.startswith("the "):
            title = title[4:]
        part = 0
        for prose, code in topic_paragraphs(text):
            if len(prose) < MIN_PARAGRAPH or prose in seen:
                continue
            seen.add(prose)
            part += 1
            combined = f"{prose}\n\n{code}" if code else prose
            if len(combined) <= MAX_CHARS:
                output = combined
            elif prose.endswith(":"):
                continue  # introduces a block that does not fit: incomplete on its own
            else:
                output = truncate(prose)
            template = rng.choice(TOPIC_TEMPLATES)
            instruction = template.format(title=title, n=part)
            rows.append({"instruction": instruction, "input": "", "output": output, "source": "pydoc_topics"})
    return rows


def first_paragraph(doc: str) -> str:
    """The first paragraph of a docstring without a leading signature; "" if it is only a signature."""
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", inspect.cleandoc(doc)) if p.strip()]
    while len(paragraphs) > 1 and _SIGNATURE.match(squash(paragraphs[0])):
        paragraphs.pop(0)
    if not paragraphs:
        return ""
    lines = paragraphs[0].splitlines()
    while len(lines) > 1 and _SIGNATURE.match(lines[0].strip()):
        lines.pop(0)
    summary = squash("\n".join(lines))
    return "" if _SIGNATURE_START.match(summary) or ">>>" in summary else summary


def _own_doc(obj: Any) -> str:
    """The object's own ``__doc__`` (never one inherited through ``inspect.getdoc``)."""
    doc = getattr(obj, "__doc__", None)
    return doc if isinstance(doc, str) else ""


def _is_public_callable(obj: Any) -> bool:
    return inspect.isclass(obj) or inspect.isroutine(obj)


def stdlib_candidates() -> list[tuple[str, str, str]]:
    """``(qualified name, kind, first docstring paragraph)`` for public stdlib callables."""
    found: dict[str, tuple[str, str]] = {}
    for modname in STDLIB_MODULES:
        module = importlib.import_module(modname)
        exported = getattr(module, "__all__", None)
        names = sorted(exported) if exported is not None else sorted(n for n in dir(module) if n[:1] != "_")
        homes = {modname, module.__name__}
        for name in names:
            obj = getattr(module, name, None)
            if not _is_public_callable(obj) or name.startswith("_"):
                continue
            owner = getattr(obj, "__module__", None) or ""
            if exported is None and owner not in homes and not owner.startswith("_"):
                continue  # re-exported from another module
            kind = "class" if inspect.isclass(obj) else "function"
            found.setdefault(f"{modname}.{name}", (kind, first_paragraph(_own_doc(obj))))
            if not inspect.isclass(obj):
                continue
            for attr in sorted(vars(obj)):
                if attr.startswith("_"):
                    continue
                member = getattr(obj, attr, None)
                if inspect.isroutine(member):
                    found.setdefault(
                        f"{modname}.{name}.{attr}", ("method", first_paragraph(_own_doc(member)))
                    )
    rows = []
    seen_answers: set[str] = set()
    for qualname in sorted(found):
        kind, answer = found[qualname]
        if len(answer) < MIN_DOCSTRING or answer in seen_answers:
            continue
        seen_answers.add(answer)
        rows.append((qualname, kind, answer))
    return rows


def build_stdlib_docstrings(rng: random.Random) -> list[dict[str, Any]]:
    """ShareGPT rows asking what a stdlib callable does, answered by its docstring summary."""
    candidates = stdlib_candidates()
    if len(candidates) > DOCSTRING_ROWS:
        keep = sorted(rng.sample(range(len(candidates)), DOCSTRING_ROWS))
        candidates = [candidates[i] for i in keep]
    rows = []
    for qualname, kind, answer in candidates:
        question = rng.choice(DOC_TEMPLATES).format(kind=kind, name=qualname)
        conversations = [{"from": "human", "value": question}, {"from": "gpt", "value": truncate(answer)}]
        rows.append({"conversations": conversations, "source": "stdlib_docstrings"})
    return rows


def _digits(rng: random.Random, n: int) -> int:
    """A random integer with exactly ``n`` digits (0-9 for one digit)."""
    return rng.randint(0, 9) if n == 1 else rng.randint(10 ** (n - 1), 10**n - 1)


Problem = tuple[str, str]  # (question, answer)


def _addition(n: int) -> Callable[[random.Random], Problem]:
    def make(rng: random.Random) -> Problem:
        a, b = _digits(rng, n), _digits(rng, n)
        q = rng.choice(("What is {a} + {b}?", "Compute {a} + {b}.", "Add {a} and {b}."))
        return q.format(a=a, b=b), f"{a} + {b} = {a + b}"

    return make


def _subtraction(n: int, allow_negative: bool) -> Callable[[random.Random], Problem]:
    def make(rng: random.Random) -> Problem:
        a, b = _digits(rng, n), _digits(rng, n)
        if not allow_negative and b > a:
            a, b = b, a
        q = rng.choice(("What is {a} - {b}?", "Compute {a} - {b}.", "Subtract {b} from {a}."))
        return q.format(a=a, b=b), f"{a} - {b} = {a - b}"

    return make


def _multiplication(na: int, nb: int) -> Callable[[random.Random], Problem]:
    def make(rng: random.Random) -> Problem:
        a, b = _digits(rng, na), _digits(rng, nb)
        q = rng.choice(("What is {a} * {b}?", "What is {a} times {b}?", "Multiply {a} by {b}."))
        return q.format(a=a, b=b), f"{a} * {b} = {a * b}"

    return make


def _division(lo: int, hi: int, dmax: int) -> Callable[[random.Random], Problem]:
    def make(rng: random.Random) -> Problem:
        a, d = rng.randint(lo, hi), rng.randint(2, dmax)
        q = rng.choice(
            (
                "What is {a} divided by {d}? Give the quotient and remainder.",
                "Divide {a} by {d} using integer division, and state the remainder.",
                "What are the quotient and remainder when {a} is divided by {d}?",
            )
        )
        return q.format(a=a, d=d), f"{a} divided by {d} is {a // d} remainder {a % d}"

    return make


# (generator, row count), from easiest to hardest.
ARITHMETIC_PLAN: tuple[tuple[Callable[[random.Random], Problem], int], ...] = (
    (_addition(1), 65),
    (_subtraction(1, allow_negative=False), 50),
    (_multiplication(1, 1), 65),
    (_addition(2), 80),
    (_subtraction(2, allow_negative=False), 80),
    (_multiplication(2, 1), 80),
    (_division(10, 99, 9), 80),
    (_addition(3), 80),
    (_subtraction(3, allow_negative=True), 80),
    (_multiplication(2, 2), 80),
    (_division(100, 999, 9), 80),
    (_division(100, 999, 99), 80),
)


def build_arithmetic(rng: random.Random) -> list[dict[str, Any]]:
    """Messages rows with exact answers; about 5% start with a short system message."""
    seen: set[str] = set()
    problems: list[Problem] = []
    for make, count in ARITHMETIC_PLAN:
        made = 0
        while made < count:
            question, answer = make(rng)
            if answer in seen:
                continue
            seen.add(answer)
            problems.append((question, answer))
            made += 1
    rng.shuffle(problems)
    with_system = set(rng.sample(range(len(problems)), round(len(problems) * 0.05)))
    rows = []
    for i, (question, answer) in enumerate(problems):
        messages = [{"role": "system", "content": SYSTEM_PROMPT}] if i in with_system else []
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        rows.append({"messages": messages, "source": "arithmetic"})
    return rows


def _dump(row: Any) -> str:
    return json.dumps(row, ensure_ascii=False)


def write_text(path: Path, text: str) -> None:
    """Write UTF-8 text with ``\\n`` line endings."""
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)


def provenance(counts: dict[str, int], digests: dict[str, str]) -> str:
    """The PROVENANCE.md text: sources, licences, row counts and how to regenerate."""
    version = platform.python_version()
    table = "\n".join(f"| `{name}` | {counts[name]} | `{digests[name]}` |" for name in sorted(counts))
    return f"""# Demo data provenance

Generated offline by `scripts/make_demo_pool.py` (seeded `random.Random(0)`, standard library only)
with CPython {version} ({platform.python_implementation()}, {sys.platform}). Nothing was downloaded.

| file | rows | sha256 |
| --- | --- | --- |
{table}

## Sources

- `pydoc_topics.jsonl` (Alpaca format): paragraphs of the Python Language Reference topics shipped
  with CPython {version} as the `pydoc_data.topics.topics` dict (the text behind `help("topics")`).
  Each prose paragraph of at least {MIN_PARAGRAPH} characters becomes one row; a short indented code
  block that follows it is kept when the whole answer fits in {MAX_CHARS} characters, otherwise the
  paragraph is cut at a sentence or word boundary to at most {MAX_CHARS} characters.
- `stdlib_docstrings.json` (ShareGPT format, a JSON array): the first paragraph of the docstrings
  of public functions, classes and methods of public classes from a fixed list of
  {len(STDLIB_MODULES)} standard library modules, as found in CPython {version} on {sys.platform}
  (`os.path` is `posixpath` there), at most {MAX_CHARS} characters, {DOCSTRING_ROWS} rows sampled
  with the seeded RNG from all candidates.
- `arithmetic.jsonl` (messages format): generated by the script: addition and subtraction of 1-3
  digit numbers, multiplication of 1-2 digit numbers and integer division with remainder, each with
  an exact answer; about 5% of rows begin with the system message "{SYSTEM_PROMPT}"
- `malformed.jsonl`: {counts["malformed.jsonl"]} hand-written bad rows, one distinct problem each
  (listed in a comment in the generator), to demonstrate the quarantine. Not part of the good pool.

## Licences

- Text taken from CPython (`pydoc_topics.jsonl`, `stdlib_docstrings.json`) is Python documentation
  and source text, copyright Python Software Foundation, used under the PSF License Agreement
  (https://docs.python.org/3/license.html).
- `arithmetic.jsonl` and `malformed.jsonl` are generated by this project and licensed under
  Apache-2.0, like the rest of lead-ray.

## Regenerate

```
python scripts/make_demo_pool.py
```

Run from the repository root. The output is byte-identical on every run with the same CPython
build; another CPython version ships different reference text and docstrings, so its output differs.
"""


def main() -> None:
    """Build every file of the demo pool and print a one-line summary per file."""
    rng = random.Random(0)
    topic_rows = build_pydoc_topics(rng)
    doc_rows = build_stdlib_docstrings(rng)
    arithmetic_rows = build_arithmetic(rng)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    texts = {
        "pydoc_topics.jsonl": "".join(_dump(r) + "\n" for r in topic_rows),
        "stdlib_docstrings.json": "[\n" + ",\n".join(_dump(r) for r in doc_rows) + "\n]\n",
        "arithmetic.jsonl": "".join(_dump(r) + "\n" for r in arithmetic_rows),
        "malformed.jsonl": "".join(line + "\n" for line in MALFORMED_LINES),
    }
    counts = {
        "pydoc_topics.jsonl": len(topic_rows),
        "stdlib_docstrings.json": len(doc_rows),
        "arithmetic.jsonl": len(arithmetic_rows),
        "malformed.jsonl": len(MALFORMED_LINES),
    }
    digests = {}
    for name, text in texts.items():
        write_text(OUT_DIR / name, text)
        digests[name] = hashlib.sha256(text.encode("utf-8")).hexdigest()
        print(f"{name}: {counts[name]} rows, {len(text.encode('utf-8'))} bytes")
    write_text(OUT_DIR / "PROVENANCE.md", provenance(counts, digests))


if __name__ == "__main__":
    main()
