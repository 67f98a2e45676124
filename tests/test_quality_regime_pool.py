"""bench/quality_regime_pool.py: the dev and test pools in the paper's regime. Counts add up, noise is where it is
recorded (and exact answers recompute, or verifiably don't), the two pools and their held-out rows share no text,
the test pool's mix is not dev's, and a build is the same every time. Small pools, and the default 5000-row ones
once; no model, a few seconds."""

from __future__ import annotations

import datetime
import html
import json
import os
import re
import sys
import unicodedata
from collections import Counter
from pathlib import Path

import pytest

from lead_ray.data.formats import normalize
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import quality_regime_pool as qrp  # noqa: E402

N = 600
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
OPERATION_WORDS = {"+": (" + ", "add "), "-": (" - ", "subtract "), "*": (" * ", " times ", "multiply "),
                   "/": ("divided", "divide ")}


@pytest.fixture(scope="module")
def small() -> dict[str, dict[str, list[dict]]]:
    return {name: qrp.make_pool(name, N) for name in qrp.POOLS}


@pytest.fixture(scope="module")
def full() -> dict[str, dict[str, list[dict]]]:
    return {name: qrp.make_pool(name) for name in qrp.POOLS}


def _qa(row: dict) -> tuple[str, str]:
    """(question, answer) of a row; a probe's answer is its correct one."""
    question = row["messages"][-2 if row["messages"][-1]["role"] == "assistant" else -1]["content"]
    return question, row["messages"][-1]["content"] if "correct" not in row else row["correct"]


def _exact_ok(source: str, question: str, answer: str) -> bool:
    """Whether `answer` is the right answer to `question`, recomputed here from the question alone."""
    if source == "arithmetic":
        numbers = sorted(int(x) for x in re.findall(r"\d+", question))
        if m := re.fullmatch(r"(\d+) ([-+*]) (\d+) = (-?\d+)", answer):
            a, op, b, result = int(m[1]), m[2], int(m[3]), int(m[4])
            right = result == {"+": a + b, "-": a - b, "*": a * b}[op]
        elif m := re.fullmatch(r"(\d+) divided by (\d+) is (\d+) remainder (\d+)", answer):
            a, op, b = int(m[1]), "/", int(m[2])
            right = (int(m[3]), int(m[4])) == divmod(a, b)
        else:
            return False
        return right and numbers == sorted([a, b]) and any(w in question.lower() for w in OPERATION_WORDS[op])
    if source == "weekday":
        m = re.search(rf"(\d{{1,2}}) ({'|'.join(MONTHS)}) (\d{{4}})", question)
        day = datetime.date(int(m[3]), MONTHS.index(m[2]) + 1, int(m[1])).weekday()
        return answer.startswith(m[0] + " ") and answer.endswith(f" a {DAYS[day]}.")
    if source == "unicode_name":
        (char,) = re.findall(r"'(.)'", question, re.S)
        return answer == unicodedata.name(char, "")
    if source == "html_entity":
        (ref,) = re.findall(r"&#?\w+;", question)
        return answer == f"{ref} is {html.unescape(ref)}"
    raise AssertionError(f"not an exact source: {source}")


def _by_source(rows: list[dict]) -> Counter:
    return Counter(r["source"] for r in rows)


def test_counts_add_up_and_rows_are_short_valid_messages(small, tmp_path: Path) -> None:
    for pool in small.values():
        counts = qrp.counts_of(pool)
        assert counts["train"] == N == sum(counts[f"train_{s}"] for s in qrp.SOURCES)
        assert abs(counts["noisy"] - qrp.NOISY_SHARE * N) <= 1
        assert counts["noisy"] == sum(counts[f"noise_{k}"] for k in qrp.NOISE_MIX)
        assert abs(counts["duplicate"] - qrp.DUPLICATE_SHARE * N) <= 1
        assert _by_source(pool["eval"]) == Counter(qrp.EVAL_PER_SOURCE)
        assert counts["eval_exact"] == sum(qrp.EVAL_PER_SOURCE[s] for s in qrp.EXACT_SOURCES) >= 300
        assert _by_source(pool["shifted"]) == Counter(dict.fromkeys(qrp.SOURCES, qrp.SHIFTED_PER_SOURCE))
        assert _by_source(pool["probes"]) == Counter(dict.fromkeys(qrp.SOURCES, qrp.PROBES_PER_SOURCE))
        assert {r["split"] for r in pool["train"]} == {"train"} and {r["split"] for r in pool["eval"]} == {"eval"}
        for part in ("train", "eval", "shifted"):
            for r in pool[part]:
                assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
                assert normalize(r) == r["messages"]  # lead-ray's ingest takes it as it is (extra keys ignored)
                assert sum(len(m["content"]) for m in r["messages"]) <= qrp.MAX_ROW_CHARS, r
        for r in pool["probes"]:
            assert [m["role"] for m in r["messages"]] == ["user"]
            question = r["messages"][0]["content"]
            assert max(len(r["correct"]), len(r["wrong"])) + len(question) <= qrp.MAX_ROW_CHARS, r
        # no row repeats another's messages exactly, so `dedup: exact` quarantines nothing
        texts = [json.dumps(r["messages"]) for r in pool["train"] + pool["eval"]]
        assert len(set(texts)) == len(texts)

    counts = qrp.write_pool(tmp_path, "dev", N)
    assert counts == qrp.counts_of(small["dev"])
    lines = [json.loads(x) for x in (tmp_path / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert lines == small["dev"]["train"] + small["dev"]["eval"]  # training rows and eval rows, in one file
    assert len((tmp_path / "shifted.jsonl").read_text().splitlines()) == counts["shifted"]
    assert len((tmp_path / "probes.jsonl").read_text().splitlines()) == counts["probes"]
    stamps = {}
    for f in ("train.jsonl", "shifted.jsonl", "probes.jsonl"):
        os.utime(tmp_path / f, ns=(10**18, 10**18))
        stamps[f] = (tmp_path / f).stat().st_mtime_ns
    qrp.write_pool(tmp_path, "dev", N)  # unchanged text: the files keep their stamps, so a cached preparation holds
    assert {f: (tmp_path / f).stat().st_mtime_ns for f in stamps} == stamps


def test_noise_sits_inside_every_source_with_its_real_source(small) -> None:
    for pool in small.values():
        train = pool["train"]
        for source in qrp.SOURCES:
            kinds = {r["noise"] for r in train if r["source"] == source} - {""}
            assert kinds == ({"wrong_answer", "mismatch", "junk"} if qrp.is_exact(source) else {"mismatch", "junk"})
        for r in train:
            assert r["source"] in qrp.SOURCES and isinstance(r["duplicate"], bool)
        by_answer: dict[str, list[str]] = {}
        for r in train:
            if not r["duplicate"] and not r["noise"]:
                by_answer.setdefault(r["messages"][-1]["content"], []).append(r["messages"][0]["content"])
        for r in (r for r in train if r["duplicate"]):  # a clean row's answer, its question trivially varied
            question, answer = _qa(r)
            assert r["noise"] == "" and any(q[1:] in question and q != question for q in by_answer[answer])
        for r in (r for r in train if r["noise"] == "mismatch"):  # the answer of another fact of the same source
            question, answer = _qa(r)
            facts = {i.answer: i for g in qrp.universe(r["source"]) for i in g}
            assert answer in facts and question != facts[answer].question  # (exact ones: verifiably wrong, below)
            assert answer not in by_answer  # a fact used for its answer only: no other row has it


def test_exact_answers_recompute_and_wrong_ones_are_verifiably_wrong(small) -> None:
    for pool in small.values():
        held_out = pool["eval"] + pool["shifted"] + pool["probes"]
        clean = [r for r in pool["train"] if not r["noise"]] + held_out
        checked = 0
        for r in clean:
            if qrp.is_exact(r["source"]):
                assert _exact_ok(r["source"], *_qa(r)), r
                checked += 1
        assert checked > 0.5 * N
        for r in pool["train"]:
            if r["noise"] in ("wrong_answer", "mismatch") and qrp.is_exact(r["source"]):
                assert not _exact_ok(r["source"], *_qa(r)), r
            assert r["noise"] != "wrong_answer" or qrp.is_exact(r["source"])
        for r in pool["probes"]:
            assert r["correct"] != r["wrong"] and r["kind"] in {"wrong_answer", "mismatch", "junk"}
            assert r["kind"] != "wrong_answer" or qrp.is_exact(r["source"])
            if qrp.is_exact(r["source"]) and r["kind"] != "junk":
                assert not _exact_ok(r["source"], r["messages"][0]["content"], r["wrong"]), r
        kinds = Counter((r["source"], r["kind"]) for r in pool["probes"])
        for source in qrp.SOURCES:  # spread over the kinds
            expected = {"wrong_answer", "mismatch", "junk"} if qrp.is_exact(source) else {"mismatch", "junk"}
            assert {k for s, k in kinds if s == source} == expected


def test_shifted_rows_are_harder_or_unseen_variants(small) -> None:
    pool_blocks = list(qrp.POOL_BLOCKS.values())
    for pool in small.values():
        train_questions = {s: {_qa(r)[0] for r in pool["train"] if r["source"] == s} for s in qrp.SOURCES}
        for r in pool["shifted"]:
            question, answer = _qa(r)
            assert r["shift"] and question not in train_questions[r["source"]]
            if r["source"] == "arithmetic":
                assert all(3 <= len(x) <= 4 for x in re.findall(r"\d+", question))
            elif r["source"] == "weekday":
                assert not 1900 <= int(re.search(r"\d{4}", question)[0]) <= 2030
            elif r["source"] == "unicode_name":
                (char,) = re.findall(r"'(.)'", question, re.S)
                assert not any(lo <= ord(char) <= hi for lo, hi in pool_blocks)
            elif r["source"] == "html_entity":
                assert re.search(r"&#x?[0-9A-F]+;", question)
            else:  # a phrasing the pool never uses: no training question of the source starts the same way
                start = " ".join(question.split()[:3])
                assert not any(q.startswith(start) for q in train_questions[r["source"]]), question
        train_chars = {c for r in pool["train"] if r["source"] == "unicode_name"
                       for c in re.findall(r"'(.)'", _qa(r)[0], re.S)}
        assert all(any(lo <= ord(c) <= hi for lo, hi in pool_blocks) for c in train_chars)


def test_default_pools_have_six_sources_and_different_mixes(full) -> None:
    shares = {}
    for name, pool in full.items():
        counts = qrp.counts_of(pool)
        assert counts["train"] == qrp.DEFAULT_TRAIN and abs(counts["noisy"] - 0.2 * qrp.DEFAULT_TRAIN) <= 1
        mix = _by_source(pool["train"])
        assert len(mix) == len(qrp.SOURCES) >= 6 and len(qrp.EXACT_SOURCES) >= 4
        shares[name] = {s: mix[s] / counts["train"] for s in qrp.SOURCES}
    dev, test = shares["dev"], shares["test"]
    assert max(dev.values()) / min(dev.values()) < 1.25  # about even
    assert max(test.values()) / min(test.values()) > 3  # skewed
    assert max(abs(dev[s] - test[s]) for s in qrp.SOURCES) > 0.1


def _texts(pool: dict[str, list[dict]]) -> dict[str, set[str]]:
    """A pool's question and answer texts: of its training rows, and of its held-out rows (eval, shifted, probes)."""
    out = {"train_q": set(), "train_a": set(), "held_q": set(), "held_a": set()}
    for r in pool["train"]:
        question, answer = _qa(r)
        out["train_q"].add(question)
        out["train_a"].add(answer)
    for r in pool["eval"] + pool["shifted"] + pool["probes"]:
        question, answer = _qa(r)
        out["held_q"].add(question)
        out["held_a"].add(answer)
    return out


def _assert_disjoint(pools: dict[str, dict[str, list[dict]]]) -> None:
    dev, test = _texts(pools["dev"]), _texts(pools["test"])
    assert not dev["train_q"] & test["train_q"]
    assert not dev["train_a"] & test["train_a"]
    for a, b in ((dev, test), (test, dev)):  # held-out rows of either pool: in neither pool's training rows
        assert not a["held_q"] & (a["train_q"] | b["train_q"])
        assert not a["held_a"] & (a["train_a"] | b["train_a"])
    assert not dev["held_q"] & test["held_q"] and not dev["held_a"] & test["held_a"]


def test_dev_and_test_pools_share_no_text(full, small) -> None:
    _assert_disjoint(full)
    _assert_disjoint(small)
    _assert_disjoint({name: qrp.make_pool(name, N, seed=seed) for name, seed in (("dev", 7), ("test", 7))})


def test_deterministic(small) -> None:
    assert qrp.make_pool("dev", N) == small["dev"]
    assert qrp.make_pool("test", N, seed=qrp.DEFAULT_SEEDS["test"]) == small["test"]
    assert qrp.make_pool("dev", N, seed=123)["train"] != small["dev"]["train"]
    with pytest.raises(ValueError):
        qrp.make_pool("prod", N)
