"""The lm-evaluation-harness bridge, fully offline: a local multiple-choice task (a YAML and a JSONL written here,
loaded by `datasets`' json builder) run on the tiny builtin model through `run_lm_eval` and `lead-ray eval`.

The harness's accuracy is checked against per-row predictions computed here directly with the model (the sum of
the continuation tokens' log-probabilities, encoded as the harness encodes a context/continuation pair), so a
wrong model, tokenizer or document count fails the test. Skipped only when lm_eval is not installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lead_ray.config import LeadConfig
from lead_ray.models.load import load_model, load_tokenizer

pytest.importorskip("lm_eval", reason="the lm-eval extra is not installed")

TASK = "lead_ray_local_mc"
DOCS = [  # hand-written, offline; choices of different lengths, so the log-likelihood sums are well apart
    {"question": "What is 2 + 3?", "choices": ["5", "seven", "a blue whale"], "label": 0},
    {"question": "Which word is a Python keyword?", "choices": ["banana", "lambda", "the tallest mountain"], "label": 1},
    {"question": "What colour is the sky on a clear day?", "choices": ["green", "loud", "blue"], "label": 2},
    {"question": "Which is an immutable sequence in Python?", "choices": ["tuple", "list", "dict"], "label": 0},
    {"question": "What is the capital of France?", "choices": ["Berlin", "Paris", "Madrid"], "label": 1},
    {"question": "How many legs does a spider have?", "choices": ["two", "six", "eight"], "label": 2},
]


@pytest.fixture()
def offline_task(tmp_path: Path, monkeypatch) -> Path:
    """A folder holding the task YAML; its data file is a local JSONL. The datasets cache goes to tmp_path."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_datasets"))
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / f"{TASK}.yaml").write_text(f"""task: {TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {json.dumps(str(data))}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: choices
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""")
    return tasks


def _expected_acc(model_path: str, docs: list[dict]) -> tuple[float, float]:
    """(accuracy, smallest top-2 log-likelihood gap) computed directly: for each choice, context "Question: ...
    \\nAnswer:" and continuation " <choice>", encoded whole then split after the context's tokens."""
    tok, model = load_tokenizer(model_path), load_model(model_path).eval()
    right, gaps = 0, []
    for doc in docs:
        context = f"Question: {doc['question']}\nAnswer:"
        scores = []
        for choice in doc["choices"]:
            ctx, whole = tok.encode(context), tok.encode(context + " " + choice)
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([whole])).logits[0].double(), -1)
            scores.append(float(sum(logp[t - 1, whole[t]] for t in range(len(ctx), len(whole)))))
        ranked = sorted(scores, reverse=True)
        gaps.append(ranked[0] - ranked[1])
        right += int(scores.index(max(scores)) == doc["label"])
    return right / len(docs), min(gaps)


def test_run_lm_eval_local_task_counts_and_accuracy(tmp_path: Path, offline_task: Path, tiny_model_path: str
                                                    ) -> None:
    from lead_ray.eval.lm_eval_bridge import LM_EVAL_FILE, run_lm_eval

    run_dir = tmp_path / "run"
    cfg = LeadConfig.from_flat(model_name_or_path=tiny_model_path)
    out = run_lm_eval(tiny_model_path, [TASK], cfg, include_path=offline_task, run_dir=run_dir, batch_size=4)
    assert json.loads((run_dir / LM_EVAL_FILE).read_text()) == out  # written, and JSON-safe as returned
    acc = out["results"][TASK]["acc,none"]
    assert 0.0 <= acc <= 1.0 and out["n-samples"][TASK]["effective"] == len(DOCS)
    want, gap = _expected_acc(tiny_model_path, DOCS)
    assert gap > 1e-3  # no near-tie, so the harness's batching cannot flip a prediction
    assert acc == pytest.approx(want)
    limited = run_lm_eval(tiny_model_path, [TASK], cfg, include_path=offline_task, run_dir=run_dir, limit=3)
    assert limited["n-samples"][TASK]["effective"] == 3 and limited["limit"] == 3
    assert limited["results"][TASK]["acc,none"] == pytest.approx(_expected_acc(tiny_model_path, DOCS[:3])[0])


def test_lead_ray_eval_runs_lm_eval_after_the_normal_eval(tmp_path: Path, offline_task: Path, tiny_model_path: str,
                                                          capsys) -> None:
    """`lead-ray eval --lm-eval-tasks ... --lm-eval-include ... --lm-eval-limit 4` on a run folder writes both
    eval.json and lm_eval.json; an unknown task is one error line before any model loads."""
    from lead_ray.cli import main
    from lead_ray.eval import EVAL_FILE
    from lead_ray.eval.lm_eval_bridge import LM_EVAL_FILE
    from tests.helpers import write_pool

    tok = load_tokenizer(tiny_model_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_pool(run_dir, tok)
    LeadConfig.from_flat(run_name="run", output_dir=str(tmp_path), model_name_or_path=tiny_model_path,
               eval_batch_size=3).save(run_dir / "config.yaml")
    argv = ["eval", "--run-dir", str(run_dir), "--model", tiny_model_path, "--generation-samples", "2",
            "--max-new-tokens", "4", "--lm-eval-include", str(offline_task)]
    assert main(argv + ["--lm-eval-tasks", f"{TASK},", "--lm-eval-limit", "4"]) == 0
    assert "lm-eval" in capsys.readouterr().out
    assert (run_dir / EVAL_FILE).is_file()
    out = json.loads((run_dir / LM_EVAL_FILE).read_text())
    assert out["tasks"] == [TASK] and out["n-samples"][TASK]["effective"] == 4
    assert 0.0 <= out["results"][TASK]["acc,none"] <= 1.0
    (run_dir / EVAL_FILE).unlink()
    assert main(argv + ["--lm-eval-tasks", "no_such_task_xyz"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no_such_task_xyz" in err[0], err
    assert not (run_dir / EVAL_FILE).exists()  # checked before the normal eval, so nothing was evaluated
