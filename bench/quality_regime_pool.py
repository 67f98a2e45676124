"""Real-text instruction pools in the paper's regime: thousands of rows, six sources, noise hidden inside each one.

`bench/quality_text_pool.py` is one 800-row pool of three sources, with noisy rows named by their `source`. The
paper selects from pools of many thousands of rows of many kinds, where nothing says which rows are bad; and a
method tuned on one pool should be judged on another. So this module builds two pools, `dev` (for tuning) and
`test` (for the results), each by default 5000 training rows of six sources, offline and deterministically, from
the running Python's standard library and the bundled demo files (`lead_ray/demo_data`, see its PROVENANCE.md):

- exact sources, whose answers a program can check: `arithmetic` (+, -, * and integer division with remainder of
  1-2 digit numbers, in the demo's format "37 + 48 = 85"), `weekday` (the day of the week of a date in 1900-2030,
  by `datetime`), `unicode_name` (a character's Unicode name, by `unicodedata`, from a fixed list of blocks) and
  `html_entity` (the character an HTML5 named entity stands for, by `html.entities.html5`);
- text sources: `pydoc_topics` (passages of the reference manual, `pydoc_data.topics`) and `stdlib_docstrings`
  (first paragraphs of standard library docstrings): the demo files' short rows first (`load_demo_rows`), then
  more rows taken from the running Python the same way (`scripts/make_demo_pool.py`) and asked the same way.

A row is short (question + answer at most MAX_ROW_CHARS characters). Each source's rows are split once, by a fixed
seed and whatever the pool's seed, into a dev side and a test side, so the two pools share no question and no
answer text, and neither shares any with the other's held-out rows. The dev pool has an about even source mix
(DEV_MIX: the reference manual, which has the fewest short rows, a little less); the test pool a skewed one
(TEST_MIX), so results on test are on a pool nobody tuned on. The text sources limit a pool to about DEFAULT_TRAIN
training rows (the manual gives some 1400 short rows in all); more raises ValueError.

In the training rows, NOISY_SHARE of the rows of every source are noisy, so noisy rows sit among clean rows of the
same kind: `wrong_answer` (an exact answer made verifiably wrong), `mismatch` (the answer of another row of the
same source) and `junk` (random characters). A row's `source` is always its real source (the noise is hidden from
the pipeline); its `noise` field ("" or the kind) and `duplicate` field are labels for the benchmark only, which
lead-ray's ingest ignores (it reads `messages`, `source` and `split` and nothing else). DUPLICATE_SHARE of the rows
are near-duplicates: copies of a clean row with a trivial variation of the question (`VARIATIONS`), marked
`"duplicate": true` (the row they copy is not marked).

Held out, and sharing no message text with any training row of either pool: `eval` rows (clean, the pool's own
distribution, `"split": "eval"`), `shifted` rows (harder or unseen variants: 3-4 digit arithmetic, dates outside
1900-2030, Unicode blocks and numeric character references the pools never use, documentation questions in a
phrasing the pools never use; `"shift"` says what changed) and contrastive `probes` (a question with its correct
answer and a noisy one, `correct`/`wrong`, by `kind`). The probes ask again the first eval rows' facts, and the
text sources' shifted rows are eval facts in the new phrasing (so only the phrasing changes): held-out facts of
the manual are too few to spend on each. Everything random is drawn from seeded `random.Random`s, so a pool is the
same on every machine with the same Python build (3.11.7 made the demo files).

    python bench/quality_regime_pool.py OUT_DIR [--n-train 5000]   # writes OUT_DIR/dev and OUT_DIR/test
"""

from __future__ import annotations

import datetime
import functools
import html.entities
import importlib
import inspect
import json
import random
import re
import sys
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "scripts"))
import make_demo_pool  # noqa: E402  (the demo files' extraction and question templates)
from quality_text_pool import VARIATIONS, _split, _with, junk, load_demo_rows, wrong_answer  # noqa: E402

EXACT_SOURCES = ("arithmetic", "weekday", "unicode_name", "html_entity")
TEXT_SOURCES = ("pydoc_topics", "stdlib_docstrings")
SOURCES = EXACT_SOURCES + TEXT_SOURCES
POOLS = ("dev", "test")
DEFAULT_SEEDS = {"dev": 0, "test": 1}
DEFAULT_TRAIN = 5000  # the dev/test split of each source (`sides`) is sized for pools of this many rows
MAX_ROW_CHARS = 240  # question + answer characters
DEV_MIX = {**dict.fromkeys(SOURCES, 1.0), "pydoc_topics": 0.9}  # about even: the manual has the fewest short rows
TEST_MIX = {"arithmetic": 0.30, "weekday": 0.22, "unicode_name": 0.16, "stdlib_docstrings": 0.13,
            "html_entity": 0.11, "pydoc_topics": 0.08}
NOISY_SHARE = 0.20
NOISE_MIX = {"wrong_answer": 0.4, "mismatch": 0.35, "junk": 0.25}  # of an exact source's noisy rows
TEXT_NOISE_MIX = {"mismatch": 0.6, "junk": 0.4}  # a text answer cannot be made verifiably wrong
DUPLICATE_SHARE = 0.05
COPIES = (2, 4)  # copies per near-duplicate cluster, at least and at most
EVAL_PER_SOURCE = {s: 80 if s in EXACT_SOURCES else 60 for s in SOURCES}
SHIFTED_PER_SOURCE = 40
PROBES_PER_SOURCE = 40
PROBE_MIX = {"wrong_answer": 14, "mismatch": 13, "junk": 13}
TEXT_PROBE_MIX = {"mismatch": 20, "junk": 20}

ARITHMETIC_TEMPLATES = {  # the demo's phrasings (scripts/make_demo_pool.py)
    "+": ("What is {a} + {b}?", "Compute {a} + {b}.", "Add {a} and {b}."),
    "-": ("What is {a} - {b}?", "Compute {a} - {b}.", "Subtract {b} from {a}."),
    "*": ("What is {a} * {b}?", "What is {a} times {b}?", "Multiply {a} by {b}."),
    "/": ("What is {a} divided by {b}? Give the quotient and remainder.",
          "Divide {a} by {b} using integer division, and state the remainder.",
          "What are the quotient and remainder when {a} is divided by {b}?"),
}
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
LAST_PAST_YEAR = 2025  # dates up to this year are asked about in the past tense, later ones in the future
WEEKDAY_TEMPLATES = {
    "past": ("What day of the week was {date}?", "On which day of the week did {date} fall?",
             "Which weekday was {date}?"),
    "future": ("What day of the week will {date} be?", "On which day of the week will {date} fall?",
               "Which weekday will {date} be?"),
}
UNICODE_TEMPLATES = ("What is the Unicode name of the character '{c}'?",
                     "Which Unicode name does the character '{c}' have?",
                     "What is the official Unicode name of '{c}'?")
HTML_TEMPLATES = ("Which character does the HTML entity {e} stand for?", "What character does {e} produce in HTML?",
                  "In HTML, which character is written as {e}?")
TOPIC_SHIFTED = ("What does section {n} of the Python docs on {title} say?",
                 "Python docs, {title}, section {n}: what does it say?")
DOC_SHIFTED = ("Tell me what `{name}` in Python's standard library is for.", "What is `{name}` in Python for?")

# Unicode blocks of the pools' characters, and blocks only the shifted rows use
POOL_BLOCKS = {
    "Latin-1 Supplement": (0x00A0, 0x00FF), "Latin Extended-A": (0x0100, 0x017F),
    "Latin Extended-B": (0x0180, 0x024F), "IPA Extensions": (0x0250, 0x02AF), "Greek and Coptic": (0x0370, 0x03FF),
    "Cyrillic": (0x0400, 0x04FF), "Armenian": (0x0530, 0x058F), "Hebrew": (0x0590, 0x05FF),
    "Georgian": (0x10A0, 0x10FF), "Latin Extended Additional": (0x1E00, 0x1EFF),
    "Currency Symbols": (0x20A0, 0x20CF), "Letterlike Symbols": (0x2100, 0x214F), "Number Forms": (0x2150, 0x218F),
    "Arrows": (0x2190, 0x21FF), "Mathematical Operators": (0x2200, 0x22FF), "Box Drawing": (0x2500, 0x257F),
    "Geometric Shapes": (0x25A0, 0x25FF), "Miscellaneous Symbols": (0x2600, 0x26FF), "Dingbats": (0x2700, 0x27BF),
}
SHIFTED_BLOCKS = {
    "Cherokee": (0x13A0, 0x13FF), "Runic": (0x16A0, 0x16FF), "Ogham": (0x1680, 0x169F),
    "Tifinagh": (0x2D30, 0x2D7F), "Glagolitic": (0x2C00, 0x2C5F), "Gothic": (0x10330, 0x1034F),
    "Alchemical Symbols": (0x1F700, 0x1F77F), "Ethiopic": (0x1200, 0x137F),
}
# standard library modules whose docstrings add rows beyond the demo file's (which used make_demo_pool's list)
EXTRA_MODULES = (
    "ast", "asyncio", "binascii", "bz2", "cmd", "code", "codeop", "colorsys", "compileall", "concurrent.futures",
    "contextvars", "copyreg", "dis", "doctest", "email.charset", "email.headerregistry", "email.message",
    "email.parser", "filecmp", "fileinput", "ftplib", "getopt", "graphlib", "html.parser", "http.cookiejar",
    "http.cookies", "http.server", "imaplib", "importlib", "importlib.metadata", "keyword", "linecache", "lzma",
    "mailbox", "mimetypes", "modulefinder", "multiprocessing", "netrc", "optparse", "pickle", "pickletools",
    "pkgutil", "plistlib", "poplib", "pstats", "pyclbr", "quopri", "reprlib", "rlcompleter", "runpy",
    "selectors", "shelve", "smtplib", "socketserver", "stat", "symtable", "timeit", "tokenize", "tomllib",
    "trace", "tracemalloc", "types", "unittest", "unittest.mock", "urllib.request", "urllib.robotparser", "wave",
    "wsgiref.headers", "wsgiref.util", "xml.dom.minidom", "xml.etree.ElementTree", "xml.sax.saxutils",
    "xmlrpc.client", "zipapp", "zipimport", "zoneinfo",
)  # fmt: skip
MIN_PASSAGE = 40  # characters of a reference-manual passage taken from the running Python

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Item:
    """One question-answer fact. `fields` are what the question is phrased from; `question` is a fixed phrasing
    (a text row's), else each pool phrases it with its own draws."""

    source: str
    answer: str
    fields: tuple = ()
    question: str = ""
    stratum: str = ""  # arithmetic's operation: a pool takes the strata in turn


def is_exact(source: str) -> bool:
    """Whether a source's answers are exact (checkable by a program)."""
    return source in EXACT_SOURCES


# --- the facts of each source --------------------------------------------------------------------------------------

def _arithmetic_item(op: str, a: int, b: int) -> Item:
    answer = f"{a} divided by {b} is {a // b} remainder {a % b}" if op == "/" else \
        f"{a} {op} {b} = {a + b if op == '+' else a - b if op == '-' else a * b}"
    return Item("arithmetic", answer, (op, a, b), stratum=op)


def _arithmetic() -> list[list[Item]]:
    """Every 1-2 digit problem: sums and products of 0-99, differences a - b with a >= b, and the quotient and
    remainder of a by b with 2 <= b <= a <= 99."""
    out = [_arithmetic_item(op, a, b) for op in "+*" for a in range(100) for b in range(100)]
    out += [_arithmetic_item("-", a, b) for a in range(100) for b in range(a + 1)]
    out += [_arithmetic_item("/", a, b) for a in range(2, 100) for b in range(2, a + 1)]
    return [[item] for item in out]


def _arithmetic_shifted() -> list[list[Item]]:
    """1200 problems of 3-4 digit numbers (a fixed draw)."""
    rng, seen, out = random.Random("arithmetic:shifted"), set(), []
    while len(out) < 1200:
        op = "+-*/"[len(out) % 4]
        a, b = rng.randint(100, 9999), rng.randint(100, 9999 if op != "/" else 999)
        a, b = (max(a, b), min(a, b)) if op in "-/" else (a, b)
        if (op, a, b) not in seen:
            seen.add((op, a, b))
            out.append([_arithmetic_item(op, a, b)])
    return out


def _date_text(d: datetime.date) -> str:
    return f"{d.day} {MONTHS[d.month - 1]} {d.year}"


def _weekday_item(d: datetime.date) -> Item:
    verb = "was" if d.year <= LAST_PAST_YEAR else "will be"
    return Item("weekday", f"{_date_text(d)} {verb} a {DAYS[d.weekday()]}.", (d,))


def _weekday() -> list[list[Item]]:
    """Every date of 1900-2030."""
    first, last = datetime.date(1900, 1, 1), datetime.date(2030, 12, 31)
    return [[_weekday_item(first + datetime.timedelta(days=i))] for i in range((last - first).days + 1)]


def _weekday_shifted() -> list[list[Item]]:
    """1000 dates of 1700-1899 and 2031-2200 (a fixed draw)."""
    rng, seen, out = random.Random("weekday:shifted"), set(), []
    while len(out) < 1000:
        year = rng.randint(1700, 1899) if len(out) % 2 else rng.randint(2031, 2200)
        d = datetime.date(year, 1, 1) + datetime.timedelta(days=rng.randrange(365))
        if d not in seen:
            seen.add(d)
            out.append([_weekday_item(d)])
    return out


def _prints(c: str) -> bool:
    """A letter, number, punctuation or symbol with a name (no mark, control, format, space, private use or
    unassigned code point)."""
    return unicodedata.category(c)[0] in "LNPS" and bool(unicodedata.name(c, ""))


def _unicode(blocks: dict[str, tuple[int, int]]) -> list[list[Item]]:
    return [[Item("unicode_name", unicodedata.name(chr(cp)), (chr(cp), block))]
            for block, (lo, hi) in blocks.items() for cp in range(lo, hi + 1) if _prints(chr(cp))]


def _html() -> list[list[Item]]:
    """HTML5 named entities (with their semicolon) of one printable character, grouped by the character: a group
    is never split between the pools or between training and held-out rows."""
    groups: dict[str, list[Item]] = {}
    for name, char in sorted(html.entities.html5.items()):
        if name.endswith(";") and len(char) == 1 and _prints(char):
            groups.setdefault(char, []).append(Item("html_entity", f"&{name} is {char}", (f"&{name}", char)))
    return list(groups.values())


def _html_shifted() -> list[list[Item]]:
    """Numeric character references (decimal or hex) of pool-block characters that have no named entity."""
    rng, named = random.Random("html_entity:shifted"), set(html.entities.html5.values())
    out = []
    for lo, hi in POOL_BLOCKS.values():
        for cp in range(lo, hi + 1):
            if _prints(chr(cp)) and chr(cp) not in named:
                ref = f"&#{cp};" if rng.random() < 0.5 else f"&#x{cp:X};"
                out.append([Item("html_entity", f"{ref} is {chr(cp)}", (ref, chr(cp)))])
    return out


def _pattern(template: str, slots: dict[str, str]) -> re.Pattern:
    out = re.escape(template)
    for name, rx in slots.items():
        out = out.replace(re.escape("{" + name + "}"), f"(?P<{name}>{rx})")
    return re.compile(out)


TOPIC_PATTERNS = [_pattern(t, {"title": ".+", "n": r"\d+(?:\.\d+)?"}) for t in make_demo_pool.TOPIC_TEMPLATES]
DOC_PATTERNS = [_pattern(t, {"kind": "class|function|method", "name": r"[\w.]+"}) for t in make_demo_pool.DOC_TEMPLATES]


def _fields(question: str, patterns: list[re.Pattern], names: tuple[str, ...]) -> tuple | None:
    m = next((m for p in patterns if (m := p.fullmatch(question))), None)
    return tuple(m.groupdict().get(n, "") for n in names) if m else None


def _passages(prose: str, limit: int) -> list[str]:
    """`prose` cut into runs of whole sentences of MIN_PASSAGE to `limit` characters (a longer sentence is cut at
    its semicolons; a piece that fits no run is left out, as is a run that introduces code with a colon)."""
    ends = [m.end() for m in make_demo_pool._SENTENCE_END.finditer(prose)
            if not prose[: m.end()].endswith(make_demo_pool._ABBREVIATIONS)]
    pieces = []
    for a, b in zip([0, *ends], [*ends, len(prose)]):
        sentence = prose[a:b].strip()
        pieces += re.split(r"(?<=;) ", sentence) if len(sentence) > limit else [sentence] if sentence else []
    out, run = [], ""
    for piece in pieces:
        run = f"{run} {piece}".strip() if len(run) + 1 + len(piece) <= limit else piece
        if len(run) > limit:
            run = ""
        elif len(run) >= MIN_PASSAGE:
            if not run.endswith(":"):
                out.append(run)
            run = ""
    return out


def _short(question: str, answer: str) -> bool:
    return len(question) + len(answer) <= MAX_ROW_CHARS


def _topic_rows() -> list[tuple[str, str, tuple]]:
    """(question, answer, (title, part)): the demo file's short rows, then passages of the reference-manual
    paragraphs that none of those rows holds, numbered `part <paragraph>.<passage>` (the demo numbers paragraphs)."""
    from pydoc_data.topics import topics

    out = []
    for messages in load_demo_rows()["pydoc_topics"]:
        question, answer = messages[-2]["content"], messages[-1]["content"]
        fields = _fields(question, TOPIC_PATTERNS, ("title", "n"))
        if fields and _short(question, answer):
            out.append((question, answer, fields))
    used = {answer.split("\n\n", 1)[0] for _, answer, _ in out}
    rng, seen = random.Random("pydoc_topics:questions"), set()
    for key in sorted(topics, key=lambda k: (len(topics[k]), k)):  # the demo's order and paragraph numbers
        title = make_demo_pool.lower_title(make_demo_pool.squash(topics[key].split("\n", 1)[0]))
        title = title[4:] if title.startswith("the ") else title
        part = 0
        for prose, _code in make_demo_pool.topic_paragraphs(topics[key]):
            if len(prose) < make_demo_pool.MIN_PARAGRAPH or prose in seen:
                continue
            seen.add(prose)
            part += 1
            if prose in used:
                continue
            template = rng.choice(make_demo_pool.TOPIC_TEMPLATES)
            room = MAX_ROW_CHARS - len(template.format(title=title, n=f"{part}.99"))
            for k, passage in enumerate(_passages(prose, room), 1):
                n = f"{part}.{k}"
                out.append((template.format(title=title, n=n), passage, (title, n)))
    return out


def _docstring_candidates(modules: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """(qualified name, kind, first docstring paragraph) of public callables, as make_demo_pool finds them."""
    found: dict[str, tuple[str, str]] = {}
    for modname in modules:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = importlib.import_module(modname)
        except ImportError:  # a Python built without it
            continue
        exported = getattr(module, "__all__", None)
        names = sorted(exported) if exported is not None else sorted(n for n in dir(module) if n[:1] != "_")
        for name in names:
            obj = getattr(module, name, None)
            if not make_demo_pool._is_public_callable(obj) or name.startswith("_"):
                continue
            owner = getattr(obj, "__module__", None) or ""
            if exported is None and owner not in {modname, module.__name__} and not owner.startswith("_"):
                continue  # re-exported from another module
            kind = "class" if inspect.isclass(obj) else "function"
            found.setdefault(f"{modname}.{name}", (kind, make_demo_pool.first_paragraph(make_demo_pool._own_doc(obj))))
            for attr in sorted(vars(obj)) if inspect.isclass(obj) else ():
                member = getattr(obj, attr, None)
                if not attr.startswith("_") and inspect.isroutine(member):
                    found.setdefault(f"{modname}.{name}.{attr}",
                                     ("method", make_demo_pool.first_paragraph(make_demo_pool._own_doc(member))))
    return [(q, kind, answer) for q, (kind, answer) in sorted(found.items())
            if len(answer) >= make_demo_pool.MIN_DOCSTRING]


def _docstring_rows() -> list[tuple[str, str, tuple]]:
    """(question, answer, (kind, name)): the demo file's short rows, then the same from more modules (kind is ""
    where the demo's question does not say it)."""
    out = []
    for messages in load_demo_rows()["stdlib_docstrings"]:
        question, answer = messages[-2]["content"], messages[-1]["content"]
        fields = _fields(question, DOC_PATTERNS, ("kind", "name"))
        if fields and _short(question, answer):
            out.append((question, answer, fields))
    rng = random.Random("stdlib_docstrings:questions")
    for qualname, kind, answer in _docstring_candidates(make_demo_pool.STDLIB_MODULES + EXTRA_MODULES):
        question = rng.choice(make_demo_pool.DOC_TEMPLATES).format(kind=kind, name=qualname)
        if _short(question, answer):
            out.append((question, answer, (kind, qualname)))
    return out


@functools.cache
def _text_items() -> dict[str, list[list[Item]]]:
    """Both text sources, no question or answer text twice (in either)."""
    seen: set[str] = set()
    out = {}
    for source, rows in (("pydoc_topics", _topic_rows()), ("stdlib_docstrings", _docstring_rows())):
        out[source] = []
        for question, answer, fields in rows:
            names = {question, answer, fields[1]} if source == "stdlib_docstrings" else {question, answer}
            if not seen & names:
                seen |= names
                out[source].append([Item(source, answer, fields, question)])
    return out


@functools.cache
def universe(source: str, shifted: bool = False) -> tuple[tuple[Item, ...], ...]:
    """A source's facts as groups (a group stays together: one HTML character's entities; else one fact),
    in a fixed order; `shifted`: the shifted rows' facts (text sources have none of their own)."""
    if source in TEXT_SOURCES:
        groups = [] if shifted else _text_items()[source]
    else:
        groups = {"arithmetic": (_arithmetic, _arithmetic_shifted), "weekday": (_weekday, _weekday_shifted),
                  "unicode_name": (lambda: _unicode(POOL_BLOCKS), lambda: _unicode(SHIFTED_BLOCKS)),
                  "html_entity": (_html, _html_shifted)}[source][shifted]()
    return tuple(tuple(g) for g in groups)


# --- phrasing and corrupting ---------------------------------------------------------------------------------------

def ask(item: Item, rng: random.Random, shifted: bool = False) -> str:
    """The item's question: its fixed one, or a phrasing drawn with `rng`; `shifted` text items in a phrasing the
    pools never use."""
    if item.source == "pydoc_topics" and shifted:
        return rng.choice(TOPIC_SHIFTED).format(title=item.fields[0], n=item.fields[1])
    if item.source == "stdlib_docstrings" and shifted:
        return rng.choice(DOC_SHIFTED).format(name=item.fields[1])
    if item.question:
        return item.question
    if item.source == "arithmetic":
        op, a, b = item.fields
        return rng.choice(ARITHMETIC_TEMPLATES[op]).format(a=a, b=b)
    if item.source == "weekday":
        (d,) = item.fields
        tense = "past" if d.year <= LAST_PAST_YEAR else "future"
        return rng.choice(WEEKDAY_TEMPLATES[tense]).format(date=_date_text(d))
    if item.source == "unicode_name":
        return rng.choice(UNICODE_TEMPLATES).format(c=item.fields[0])
    return rng.choice(HTML_TEMPLATES).format(e=item.fields[0])


def _is_name(name: str) -> bool:
    try:
        unicodedata.lookup(name)
    except KeyError:
        return False
    return True


def corrupt(item: Item, rng: random.Random) -> str:
    """An exact item's answer made wrong, close to the right one, and never another fact's correct answer (so
    it leaks no answer text between the pools): another quotient or result, weekday or character, or a Unicode
    name with another last word (`_wrong_names`)."""
    if item.source == "arithmetic":  # a negative sum or product would be too easy to spot
        for _ in range(100):
            wrong = wrong_answer(item.answer, rng)
            if not wrong.rsplit(" ", 1)[-1].startswith("-"):
                return wrong
        return wrong
    if item.source == "weekday":
        (d,) = item.fields
        day = DAYS[d.weekday()]
        return item.answer.replace(f" a {day}.", f" a {rng.choice([x for x in DAYS if x != day])}.")
    if item.source == "html_entity":
        ref, char = item.fields
        for _ in range(100):
            other = chr(ord(char) + rng.choice([-1, 1]) * rng.randint(1, 8))
            if _prints(other) and other != char:
                return f"{ref} is {other}"
        return f"{ref} is {chr(ord(char) + 1) if char != 'A' else 'B'}"
    return _wrong_names()[item.answer]


@functools.cache
def _wrong_names() -> dict[str, str]:
    """Each Unicode name (pool and shifted blocks) → a wrong one: its last word swapped for another last word of
    its block, never a real name and never another name's wrong one (fixed draws, whatever the pool's seed)."""
    rng, out, used = random.Random("unicode_name:wrong"), {}, set()
    for group in universe("unicode_name") + universe("unicode_name", shifted=True):
        name, (_char, block) = group[0].answer, group[0].fields
        head, (lo, hi) = name.rsplit(" ", 1)[0], (POOL_BLOCKS | SHIFTED_BLOCKS)[block]
        candidates = [f"{head} {unicodedata.name(chr(rng.randint(lo, hi)), ' ?').rsplit(' ', 1)[-1]}"
                      for _ in range(100)]
        candidates += [name + suffix for suffix in (" WITH STROKE", " WITH DOT", " WITH TAIL", " SIGN", " MARK")]
        out[name] = next(c for c in candidates if c != name and c not in used and not c.endswith(" ?")
                         and not _is_name(c))
        used.add(out[name])
    return out


def _fit(question: str, answer: str) -> str:
    """A noisy answer cut to fit the row length (junk only: other answers come from fitting rows)."""
    return answer[: max(1, MAX_ROW_CHARS - len(question))].rstrip() or answer[:1]


def _messages(question: str, answer: str | None = None) -> Messages:
    user = [{"role": "user", "content": question}]
    return user if answer is None else [*user, {"role": "assistant", "content": answer}]


# --- sizes ---------------------------------------------------------------------------------------------------------

def plan(name: str, n_train: int = DEFAULT_TRAIN) -> dict[str, dict[str, int]]:
    """Per source: training rows (`train`), noisy rows by kind, near-duplicate copies (`duplicate`), clean rows
    (`clean`, originals of the copies included) and facts used (`facts`: clean and noisy questions, the answers
    of mismatched rows, and the held-out facts, which the eval rows, the probes and the text sources' shifted
    rows share)."""
    train = _split(n_train, DEV_MIX if name == "dev" else TEST_MIX)
    noisy = _split(round(NOISY_SHARE * n_train), train)
    dups = _split(round(DUPLICATE_SHARE * n_train), train)
    out = {}
    for source in SOURCES:
        kinds = _split(noisy[source], NOISE_MIX if is_exact(source) else TEXT_NOISE_MIX)
        clean = train[source] - noisy[source] - dups[source]
        out[source] = {"train": train[source], **kinds, "duplicate": dups[source], "clean": clean,
                       "facts": clean + noisy[source] + kinds["mismatch"] + EVAL_PER_SOURCE[source]}
    return out


@functools.cache
def sides(source: str, shifted: bool = False) -> dict[str, tuple[tuple[Item, ...], ...]]:
    """The source's groups split between the dev and test pools by a fixed seed (the pool's seed plays no part),
    in proportion to what the two pools take at DEFAULT_TRAIN rows (half each for shifted facts)."""
    groups = list(universe(source, shifted))
    random.Random(f"{source}:{'shifted' if shifted else 'pool'}:sides").shuffle(groups)
    need = {name: plan(name)[source]["facts"] for name in POOLS}
    share = 0.5 if shifted else need["dev"] / (need["dev"] + need["test"])
    total, cut, taken = sum(map(len, groups)), 0, 0
    while cut < len(groups) and taken + len(groups[cut]) <= share * total:
        taken += len(groups[cut])
        cut += 1
    return {"dev": tuple(groups[:cut]), "test": tuple(groups[cut:])}


def _order(groups: list[tuple[Item, ...]], rng: random.Random) -> list[tuple[Item, ...]]:
    """Shuffled; strata (arithmetic's operations) taken in turn."""
    groups = list(groups)
    rng.shuffle(groups)
    rank: dict[str, int] = {}
    keyed = []
    for g in groups:
        rank[g[0].stratum] = rank.get(g[0].stratum, 0) + 1
        keyed.append((rank[g[0].stratum], g[0].stratum, g))
    return [g for *_, g in sorted(keyed, key=lambda k: k[:2])]


# --- one pool ------------------------------------------------------------------------------------------------------

def _source_rows(source: str, name: str, counts: dict[str, int], rng: random.Random) -> dict[str, list[dict]]:
    groups = _order(list(sides(source)[name]), rng)
    n_eval = EVAL_PER_SOURCE[source]
    # held out: one fact of each of the first groups, single-fact groups first (the others would be lost)
    held_idx = sorted(range(len(groups)), key=lambda i: len(groups[i]) > 1)[:n_eval]
    if len(held_idx) < n_eval:
        raise ValueError(f"{source}: too few facts for the {name} pool's held-out rows")
    held = [rng.choice(groups[i]) for i in sorted(held_idx)]
    held_set = set(held_idx)
    stream = [item for i, g in enumerate(groups) if i not in held_set for item in g]
    n_questions = counts["clean"] + sum(counts[k] for k in NOISE_MIX if k in counts)
    if len(stream) < n_questions + counts["mismatch"]:
        raise ValueError(f"{source}: the {name} pool needs {n_questions + counts['mismatch']} training facts, its "
                         f"side has {len(stream)}; use a smaller n_train")
    questions, spare = stream[:n_questions], stream[n_questions:]

    train: list[dict] = []

    def add(question: str, answer: str, noise: str = "") -> None:
        if not _short(question, answer):
            raise AssertionError(f"{source}: row over {MAX_ROW_CHARS} characters: {question!r}")
        train.append({"messages": _messages(question, answer), "source": source, "split": "train",
                      "noise": noise, "duplicate": False})

    clean, rest = questions[: counts["clean"]], questions[counts["clean"]:]
    for item in clean:
        add(ask(item, rng), item.answer)
    for kind in ("wrong_answer", "mismatch", "junk"):
        for _ in range(counts.get(kind, 0)):
            item = rest.pop()
            question = ask(item, rng)
            if kind == "wrong_answer":
                add(question, corrupt(item, rng), kind)
            elif kind == "junk":
                add(question, _fit(question, junk(rng)), kind)
            else:  # the answer of a spare fact (used nowhere else) that fits
                j = next((j for j, d in enumerate(spare) if d.answer != item.answer and _short(question, d.answer)),
                         None)
                if j is None:
                    raise ValueError(f"{source}: no spare answer fits a mismatched row in the {name} pool")
                add(question, spare.pop(j).answer, kind)

    # near-duplicates: copies of clean rows, each with another trivial variation of the question
    left, originals = counts["duplicate"], iter(train[: counts["clean"]])
    while left:
        row = next(originals)
        question, answer = row["messages"][-2]["content"], row["messages"][-1]["content"]
        variants = [v(question) for v in VARIATIONS[1:]]
        variants = [v for v in dict.fromkeys(variants) if question[1:] in v and v != question and _short(v, answer)]
        for v in rng.sample(variants, min(left, rng.randint(*COPIES), len(variants))):
            left -= 1
            train.append({**row, "messages": _with(row["messages"], question=v), "duplicate": True})

    evals = [{"messages": _messages(ask(item, rng), item.answer), "source": source, "split": "eval"}
             for item in held[:n_eval]]
    probes = _probes(source, held[:PROBES_PER_SOURCE], rng)
    if is_exact(source):
        pool = _order(list(sides(source, shifted=True)[name]), rng)
        shifted_items = [rng.choice(g) for g in pool[:SHIFTED_PER_SOURCE]]
        shift = {"arithmetic": "3-4 digit operands", "weekday": "year outside 1900-2030",
                 "html_entity": "numeric character reference instead of a named entity"}
        labels = [shift.get(source) or f"Unicode block not in the pools: {item.fields[1]}" for item in shifted_items]
        shifted = [(item, ask(item, rng), label) for item, label in zip(shifted_items, labels)]
    else:  # the eval rows' facts, asked in a phrasing the pools never use: only the phrasing changes
        asked = [(item, ask(item, rng, shifted=True), "question phrasing not used in the pools") for item in held]
        shifted = [(item, q, label) for item, q, label in asked if _short(q, item.answer)][:SHIFTED_PER_SOURCE]
        if len(shifted) < SHIFTED_PER_SOURCE:
            raise ValueError(f"{source}: too few held-out facts fit a shifted question in the {name} pool")
    shifted_rows = [{"messages": _messages(q, item.answer), "source": source, "split": "shifted", "shift": label}
                    for item, q, label in shifted]
    return {"train": train, "eval": evals, "shifted": shifted_rows, "probes": probes}


def _probes(source: str, items: list[Item], rng: random.Random) -> list[dict]:
    """A question with its correct answer and a noisy one; mismatched answers are other probes' answers."""
    kinds = [k for k, n in (PROBE_MIX if is_exact(source) else TEXT_PROBE_MIX).items() for _ in range(n)]
    out = []
    for i, (item, kind) in enumerate(zip(items, kinds)):
        question = ask(item, rng)
        if kind == "wrong_answer":
            wrong = corrupt(item, rng)
        elif kind == "junk":
            wrong = _fit(question, junk(rng))
        else:
            others = items[i + 1:] + items[:i]
            wrong = next((o.answer for o in others if o.answer != item.answer and _short(question, o.answer)), "")
            if not wrong:
                raise ValueError(f"{source}: no held-out answer fits a mismatch probe")
        out.append({"messages": _messages(question), "source": source, "correct": item.answer, "wrong": wrong,
                    "kind": kind})
    return out


def make_pool(name: str, n_train: int = DEFAULT_TRAIN, seed: int | None = None) -> dict[str, list[dict]]:
    """The `dev` or `test` pool: `train` (n_train rows, shuffled), `eval`, `shifted` and `probes` rows. `seed`
    (default DEFAULT_SEEDS[name]) draws the rows from the pool's side of each source; ValueError if too few."""
    if name not in POOLS:
        raise ValueError(f"pool name {name!r}: expected one of {POOLS}")
    rng = random.Random(DEFAULT_SEEDS[name] if seed is None else seed)
    out: dict[str, list[dict]] = {"train": [], "eval": [], "shifted": [], "probes": []}
    for source, counts in plan(name, n_train).items():
        for part, rows in _source_rows(source, name, counts, rng).items():
            out[part] += rows
    rng.shuffle(out["train"])
    rng.shuffle(out["eval"])
    return out


def counts_of(pool: dict[str, list[dict]]) -> dict[str, int]:
    """Row counts: train, eval, noisy, duplicate, eval_exact, shifted, probes, noise_<kind> and train_<source>."""
    train = pool["train"]
    out = {"train": len(train), "eval": len(pool["eval"]), "noisy": sum(bool(r["noise"]) for r in train),
           "duplicate": sum(r["duplicate"] for r in train),
           "eval_exact": sum(is_exact(r["source"]) for r in pool["eval"]), "shifted": len(pool["shifted"]),
           "probes": len(pool["probes"])}
    for kind in NOISE_MIX:
        out[f"noise_{kind}"] = sum(r["noise"] == kind for r in train)
    for source in SOURCES:
        out[f"train_{source}"] = sum(r["source"] == source for r in train)
    return out


def _write(path: Path, rows: list[dict]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if not path.exists() or path.read_text(encoding="utf-8") != text:  # unchanged files keep their stamps
        path.write_text(text, encoding="utf-8")


def write_pool(folder: Path, name: str, n_train: int = DEFAULT_TRAIN, seed: int | None = None) -> dict[str, int]:
    """Write `train.jsonl` (the training rows, then the eval rows, `"split": "eval"`: lead-ray ingests both from
    one file), `shifted.jsonl` and `probes.jsonl` into `folder`; returns the row counts (`counts_of`)."""
    pool = make_pool(name, n_train, seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / "train.jsonl", pool["train"] + pool["eval"])
    _write(folder / "shifted.jsonl", pool["shifted"])
    _write(folder / "probes.jsonl", pool["probes"])
    return counts_of(pool)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--n-train", type=int, default=DEFAULT_TRAIN)
    args = parser.parse_args()
    for pool_name in POOLS:
        print(pool_name, json.dumps(write_pool(args.out / pool_name, pool_name, args.n_train)))
