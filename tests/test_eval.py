"""lead_ray.eval: held-out NLL (overall/per source/per group) and greedy exact match, checked against numbers
computed directly with the model, on real Parquet files, a real RowStore and the tiny model."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from lead_ray.config import LeadConfig, load_config
from lead_ray.data.store import RowStore
from lead_ray.eval import EVAL_FILE, evaluate_run, main_eval
from lead_ray.eval.generate import exact_match, greedy_generate, last_number, normalize_answer, split_prompt
from lead_ray.eval.nll import heldout_nll
from lead_ray.models.load import load_model, load_tokenizer
from lead_ray.models.nll import response_nll
from tests.conftest import TINY, seed_prepared
from tests.helpers import EVAL_IDS, ROWS, conv, make_run, write_pool


@pytest.fixture(scope="module")
def tok(tiny_model_path: str):
    return load_tokenizer(tiny_model_path)


@pytest.fixture(scope="module")
def base_model(tiny_model_path: str):
    return load_model(tiny_model_path).eval()


@pytest.fixture(scope="module")
def store(tmp_path_factory, tok) -> RowStore:
    return write_pool(tmp_path_factory.mktemp("pool"), tok)


def _direct_rows(model, store: RowStore, ids) -> tuple[np.ndarray, np.ndarray]:
    """Per-row (mean response NLL, target tokens), one unpadded row at a time: no collate, no attention mask."""
    nll, counts = [], []
    with torch.no_grad():
        for i in ids:
            x, m = store.get(int(i))
            input_ids = torch.from_numpy(np.asarray(x, dtype=np.int64))[None]
            mask = torch.from_numpy(np.asarray(m, dtype=bool))[None]
            v, c = response_nll(model(input_ids=input_ids).logits, input_ids, mask)
            nll.append(float(v[0]))
            counts.append(float(c[0]))
    return np.array(nll), np.array(counts)


def _weighted(nll: np.ndarray, counts: np.ndarray) -> float:
    return float((nll * counts).sum() / counts.sum())


@pytest.mark.parametrize("batch_size", [1, 4])
def test_heldout_nll_matches_per_row_nll_by_source_and_group(base_model, store, tok, batch_size: int) -> None:
    sources = np.array([ROWS[i][0] for i in EVAL_IDS], dtype=object)
    groups = np.array([ROWS[i][2] for i in EVAL_IDS])
    out = heldout_nll(base_model, store, EVAL_IDS, {"source": sources, "group": groups}, batch_size,
                      tok.pad_token_id, torch.device("cpu"))
    nll, counts = _direct_rows(base_model, store, EVAL_IDS)
    np.testing.assert_allclose(out["rows"]["nll"], nll, rtol=1e-5)
    assert out["rows"]["tokens"] == counts.astype(int).tolist() and out["rows"]["id"] == EVAL_IDS.tolist()
    for name, labels in (("source", sources), ("group", groups)):
        assert set(out["by"][name]) == {str(v) for v in labels}
        for label, cell in out["by"][name].items():
            sel = np.array([str(v) == label for v in labels])
            assert cell["n"] == sel.sum() and cell["tokens"] == counts[sel].sum()
            assert cell["nll"] == pytest.approx(_weighted(nll[sel], counts[sel]), rel=1e-5)
    cells = out["by"]["source"].values()
    combined = sum(c["nll"] * c["tokens"] for c in cells) / sum(c["tokens"] for c in cells)
    assert out["nll"] == pytest.approx(combined, rel=1e-6)
    assert out["nll"] == pytest.approx(_weighted(nll, counts), rel=1e-5)
    assert out["n"] == len(EVAL_IDS) and out["tokens"] == counts.sum()
    # the rows differ enough in length that token weighting is distinguishable from a plain mean of rows
    assert abs(out["nll"] - nll.mean()) > 1e-3
    assert not base_model.training


def test_heldout_nll_restores_train_mode_and_rejects_misaligned_labels(base_model, store, tok) -> None:
    model = copy.deepcopy(base_model).train()
    heldout_nll(model, store, EVAL_IDS[:2], {}, 2, tok.pad_token_id, torch.device("cpu"))
    assert model.training
    with pytest.raises(ValueError, match="breakdown 'source'"):
        heldout_nll(model, store, EVAL_IDS, {"source": np.array(["a"])}, 2, tok.pad_token_id, torch.device("cpu"))


def _manual_greedy(model, tok, prompt, max_new_tokens: int) -> str:
    """Greedy decoding of one prompt without padding, cache or `generate`: argmax of a full forward each step."""
    text = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    new: list[int] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            nxt = int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            new.append(nxt)
    return tok.decode(new, skip_special_tokens=True)


def _single_turn_eval_rows() -> list[tuple[list[dict[str, str]], str]]:
    return [p for i in EVAL_IDS if (p := split_prompt(ROWS[i][3])) is not None]


@pytest.fixture(scope="module")
def memorised(base_model, store, tok):
    """The tiny model trained until it reproduces the single-turn eval answers: greedy outputs that differ by
    prompt and length, so batching with left padding is really exercised, and a known right answer per row."""
    model = copy.deepcopy(base_model).train()
    rows = [i for i in EVAL_IDS if split_prompt(ROWS[i][3]) is not None]
    from lead_ray.models.nll import collate

    batch = collate([store.get(int(i)) for i in rows], tok.pad_token_id)
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(200):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        nll, counts = response_nll(logits, batch["input_ids"], batch["assistant_mask"])
        loss = (nll * counts).sum() / counts.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if float(loss.detach()) < 0.02:  # greedy reproduces every answer well before this
            break
    return model.eval()


def test_exact_match_is_one_on_memorised_answers_and_zero_on_garbage(memorised, tok) -> None:
    rows = _single_turn_eval_rows()
    assert len(rows) == len(EVAL_IDS) - 1  # the multi-turn row is not a generation item
    out = exact_match(memorised, tok, rows, batch_size=3, max_new_tokens=24)
    assert out["n"] == len(rows) == 6 and out["accuracy"] == 1.0
    assert out["n_number"] == 3 and out["accuracy_number"] == 1.0  # only the arithmetic answers hold a number
    assert [e["generated"] for e in out["examples"]] == [r for _, r in rows]
    garbage = [(p, "zebra " + r) for p, r in rows]
    bad = exact_match(memorised, tok, garbage, batch_size=3, max_new_tokens=24)
    assert bad["accuracy"] == 0.0 and not any(e["correct"] for e in bad["examples"])
    assert bad["accuracy_number"] == 1.0  # the garbage prefix leaves the last number alone ...
    wrong = exact_match(memorised, tok, [(p, r + " 1") for p, r in rows], batch_size=6, max_new_tokens=24)
    assert wrong["accuracy"] == 0.0 and wrong["n_number"] == 6 and wrong["accuracy_number"] == 0.0  # ... this not


def test_batched_left_padded_generation_equals_unpadded_greedy(memorised, base_model, tok) -> None:
    """References set to each model's own greedy output, decoded one prompt at a time: exact match 1.0."""
    prompts = [[{"role": "user", "content": u}] for u in
               ("What is 2 + 3?", "Hi", "Subtract 163 from 173 and explain every single step in detail please.",
                "What does zip do?", "What is a tuple?")]
    for model in (memorised, base_model):
        refs = [_manual_greedy(model, tok, p, 12) for p in prompts]
        out = exact_match(model, tok, list(zip(prompts, refs, strict=True)), batch_size=5, max_new_tokens=12)
        assert out["accuracy"] == 1.0, [(e["generated"], e["reference"]) for e in out["examples"]]
    assert len({normalize_answer(r) for r in refs}) == 1  # the base model babbles the same for every prompt ...
    memorised_refs = [_manual_greedy(memorised, tok, p, 12) for p in prompts]
    assert len(set(memorised_refs)) >= 3  # ... the memorised one does not, so padding mistakes would show
    assert greedy_generate(memorised, tok, prompts, 2, 12) == memorised_refs


def test_normalize_answer_last_number_and_split_prompt() -> None:
    assert normalize_answer("  2 + 3\n\t=  5 ") == "2 + 3 = 5"
    assert last_number("968 divided by 7 is 138 remainder 2") == "2"
    assert last_number("total: 1,200.50 dollars") == "1200.5" and last_number("-0.0") == "0"
    assert last_number("the answer is 100") == last_number("100.0") == "100"
    assert last_number("no digits") is None
    assert split_prompt(conv("q", "a", system="s")) == ([{"role": "system", "content": "s"},
                                                          {"role": "user", "content": "q"}], "a")
    assert split_prompt(ROWS[7][3]) is None
    assert split_prompt([{"role": "user", "content": "q"}]) is None
    assert split_prompt([{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"},
                         {"role": "assistant", "content": "b"}]) is None


def test_evaluate_run_full_model_uses_only_eval_rows(tmp_path: Path, memorised, tok, tiny_model_path: str) -> None:
    run_dir = make_run(tmp_path, tok, tiny_model_path)
    memorised.save_pretrained(run_dir / "model", safe_serialization=True)
    tok.save_pretrained(run_dir / "model")
    out = evaluate_run(run_dir, generation_samples=4, max_new_tokens=24)
    assert json.loads((run_dir / EVAL_FILE).read_text()) == json.loads(json.dumps(out))
    assert out["nll"]["rows"]["id"] == EVAL_IDS.tolist()  # eval split only, in id order
    nll, counts = _direct_rows(memorised, RowStore(run_dir / "pool" / "pool.arrow"), EVAL_IDS)
    assert out["nll"]["nll"] == pytest.approx(_weighted(nll, counts), rel=1e-4)
    src = np.array([ROWS[i][0] for i in EVAL_IDS])
    assert out["nll"]["by"]["source"]["facts"]["nll"] == pytest.approx(
        _weighted(nll[src == "facts"], counts[src == "facts"]), rel=1e-4)
    assert set(out["nll"]["by"]["group"]) == {"0", "1", "2"}
    em = out["exact_match"]
    # the first 4 single-turn eval rows (the multi-turn one skipped), all memorised
    expected = [split_prompt(ROWS[i][3])[1] for i in EVAL_IDS if split_prompt(ROWS[i][3]) is not None][:4]
    assert em["n"] == 4 and [e["reference"] for e in em["examples"]] == expected and em["accuracy"] == 1.0
    assert em["by_source"]["arithmetic"]["n"] + em["by_source"]["facts"]["n"] == 4
    capped = evaluate_run(run_dir, max_samples=2, generation_samples=1)
    assert capped["nll"]["rows"]["id"] == EVAL_IDS[:2].tolist() and capped["exact_match"]["n"] == 1


def test_evaluate_run_lora_adapter_applies_the_adapter(tmp_path: Path, base_model, tok, tiny_model_path: str
                                                       ) -> None:
    from peft import LoraConfig, get_peft_model

    run_dir = make_run(tmp_path, tok, tiny_model_path)
    torch.manual_seed(1)
    peft_model = get_peft_model(copy.deepcopy(base_model), LoraConfig(
        r=4, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM", init_lora_weights=False)).eval()
    peft_model.save_pretrained(run_dir / "model")  # adapter only, no tokenizer: the base model's is used
    assert (run_dir / "model" / "adapter_config.json").is_file()
    out = evaluate_run(run_dir, generation_samples=2, max_new_tokens=4)
    store = RowStore(run_dir / "pool" / "pool.arrow")
    with_adapter = _weighted(*_direct_rows(peft_model, store, EVAL_IDS))
    without = _weighted(*_direct_rows(base_model, store, EVAL_IDS))
    assert abs(with_adapter - without) > 1e-2  # the adapter changes the numbers, so applying it is checked
    assert out["nll"]["nll"] == pytest.approx(with_adapter, rel=1e-4)


def test_main_eval_bad_paths_are_one_error_line(tmp_path: Path, capsys) -> None:
    cases = [dict(run_dir=str(tmp_path / "nope")), dict(), dict(run_dir=str(tmp_path), config="x.yaml"),
             dict(config=str(tmp_path / "missing.yaml")), dict(run_dir=str(tmp_path))]
    for kwargs in cases:
        assert main_eval(**kwargs) == 2, kwargs
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("lead-ray: error: "), (kwargs, err)
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    LeadConfig.from_flat(run_name="r", output_dir=str(tmp_path)).save(run_dir / "config.yaml")
    assert main_eval(run_dir=str(run_dir), model=str(tmp_path / "no_model")) == 2
    assert "no_model" in capsys.readouterr().err


@pytest.mark.slow
def test_real_lora_run_then_evaluate(tmp_path: Path, tiny_prepared) -> None:
    """A real tiny LoRA run; evaluate_run reproduces its held-out NLL from the saved adapter and the merged model."""
    from lead_ray.pipeline import run

    seed_prepared(tiny_prepared, tmp_path / "tiny")
    cfg = load_config(TINY, {"output_dir": str(tmp_path), "use_lora": True,
                                                       "merge_adapter": True, "max_rounds": 3})
    summary = run(cfg)
    run_dir = cfg.run_dir
    enriched = pq.read_table(run_dir / "prep" / "enriched.parquet", columns=["id", "split"]).to_pandas()
    eval_ids = sorted(enriched.loc[enriched["split"] == "eval", "id"])[: cfg.training.eval_max_samples]
    out = evaluate_run(run_dir, generation_samples=8, max_new_tokens=16)
    assert out["nll"]["rows"]["id"] == eval_ids and out["nll"]["n"] == len(eval_ids) > 0
    assert out["nll"]["nll"] == pytest.approx(summary["nll_after"], abs=1e-4)  # the training loop's own number
    assert out["nll"]["nll"] < summary["nll_before"] - 1e-3
    assert out["exact_match"]["n"] == 8 and 0.0 <= out["exact_match"]["accuracy"] <= 1.0
    merged = run_dir / "merged"
    assert (run_dir / "model" / "adapter_config.json").is_file() and (merged / "config.json").is_file()
    shutil.copyfile(run_dir / EVAL_FILE, tmp_path / "adapter_eval.json")
    out_merged = evaluate_run(run_dir, merged, generation_samples=8, max_new_tokens=16)
    assert out_merged["nll"]["nll"] == pytest.approx(out["nll"]["nll"], abs=1e-4)
    assert out_merged["model"] == str(merged)
