"""Does LEAD beat cheap baselines at the same unique-sample budget? Every method × budget × seed, side by side.

With the tiny model (default) the pool (bench/quality_pool.py) has learnable task families at graded difficulty,
near-duplicate families and noisy families with wrong answers; the held-out set covers the learnable families only.
With `--model smollm2` (SmolLM2-135M-Instruct, LoRA, max_length 128) the pool is real text
(bench/quality_text_pool.py): reference-manual paragraphs, stdlib docstrings and arithmetic from the bundled demo
files, about 800 training rows with 22% injected, recorded noise (wrong arithmetic answers, mismatched answers,
random-character answers) and 10% near-duplicates, and 150 clean held-out rows, 40% of them arithmetic.

One preparation (ingest, embeddings, task groups, base-model IU, IFD, arms) is shared by every run; each run is then
the real `train_with_selection` (SelectionService + TorchTrainer) with only the selector, the budget and the seed
changed, followed by greedy exact match on the held-out set (for smollm2: on the arithmetic held-out rows only,
whose answers are exact; `exact_match` is the whole normalised answer, e.g. "62 - 29 = 33", as
lead_ray/eval/generate.py scores it, `number_match` its last number). Held-out NLL is over all held-out rows.

    python bench/quality.py                 # the full table (tiny model built from a config, ~1 h on 2 CPUs)
    python bench/quality.py --quick         # a small subset in a few minutes (tests/test_quality_bench.py)

SmolLM2 on a 2-core CPU, in this order (both write to bench/results/quality-smollm2-cpu):

    python bench/quality.py --model smollm2 --rescore-timing   # ~30 min: iterative_rescore vs lead, 300/600 rows
    python bench/quality.py --model smollm2                    # ~90 min: lead, lead_learnable, random, longest
                                                               #   at budgets 5% and 10%, 2 seeds (16 runs)

(Durations estimated from measured costs on 2 cores, about 4 s per LoRA step of 8 rows and 0.15 s per row scored,
plus ~10 min of preparation per pool; with `--use-gpu` both are far shorter.) The table has no iterative_rescore
(re-scoring the pool with SmolLM2 every round is what makes it slow): its time ratio comes from the timing run's
rescore_timing.csv in the same --out folder, the largest pool's, or nan when that file is missing.

Writes runs.csv (one row per run, saved as each run ends; `--resume` keeps those rows and does only the rest),
table.csv (method × budget: mean ± std over seeds) and quality.png to --out.
The last line is `lead_vs_random_nll_gain=<x> lead_vs_iterative_time_ratio=<y>`: the mean over budgets of
(random NLL - LEAD NLL) / random NLL, and LEAD's mean run time over iterative_rescore's (same budgets and seeds).
`--rescore-timing` writes rescore_timing.csv and ends with `rescore_time_ratio_300=… rescore_time_ratio_600=…
selection_time_ratio_300=… selection_time_ratio_600=…` (LEAD / iterative_rescore, whole run and selection only).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality_pool  # noqa: E402
import quality_text_pool  # noqa: E402
from quality_pool import pretraining_rows  # noqa: E402

from lead_ray.config import LeadConfig, config_fields  # noqa: E402

# method name → config overrides; the ablations are LEAD with one part switched off
METHODS: dict[str, dict] = {
    "lead": {},
    "lead_learnable": {"utility": "learnable"},  # utility = loss minus the warm-up model's loss (RHO-LOSS style)
    "random": {"selector": "random"},
    "longest": {"selector": "longest"},
    "static_iu": {"selector": "static_iu"},
    "static_ifd": {"selector": "static_ifd"},
    "iterative_rescore": {"selector": "iterative_rescore"},
    "lead_uniform_arms": {"uniform_arms": True},
    "lead_no_correction": {"use_correction": False},
    "lead_no_smoothing": {"smoothing": 1.0},
    "lead_stop_at_budget": {"reuse_after_budget": False},  # the paper's stop rule: less training than the rest
    "full": {"selector": "full"},
}
FULL = dict(budgets=[0.025, 0.05, 0.1], seeds=3, per_family=150, eval_per_family=50, pretrain_rows=6000,
            methods=[m for m in METHODS if m != "lead_learnable"])  # the tiny table as before (SMOLLM2 has it)
QUICK = dict(budgets=[0.05], seeds=1, per_family=30, eval_per_family=10, pretrain_rows=1000,
             methods=["lead", "random", "iterative_rescore"])  # `full` left out: 20x the others' training
# SmolLM2 on the real-text pool (bench/quality_text_pool.py): sized for ~90 min on a 2-core CPU
SMOLLM2 = dict(budgets=[0.05, 0.1], seeds=2, train_rows=800, eval_rows=150,
               methods=["lead", "lead_learnable", "random", "longest"])
SMOLLM2_QUICK = dict(budgets=[0.05, 0.1], seeds=1, train_rows=200, eval_rows=60,
                     methods=["lead", "random", "iterative_rescore"])
TIMING_BUDGET = 0.05
TIMING_METHODS = ("iterative_rescore", "lead")


def log(msg: str) -> None:
    print(f"[quality] {msg}", flush=True)


def build_tiny_base(out: Path, cache: Path, pretrain_rows: int, seed: int = 0) -> str:
    """A 2-layer Llama built from a config (the builtin tiny model's tokenizer and shape), then pre-trained on
    level-1 rows of the learnable families, so that its IU and IFD carry signal. Built once per --work folder."""
    if (out / "config.json").exists():
        return str(out)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from lead_ray.data.tokenize import tokenize_messages
    from lead_ray.models.load import load_tokenizer, resolve_model_path
    from lead_ray.models.nll import collate, response_nll

    tiny = resolve_model_path("builtin:tiny", cache)
    tok = load_tokenizer(tiny)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tiny, trust_remote_code=False))
    rows = [tokenize_messages(tok, r["messages"], 64) for r in pretraining_rows(pretrain_rows, seed + 1)]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    t0 = time.time()
    for epoch in range(3):
        order = np.random.default_rng(epoch).permutation(len(rows))
        for s in range(0, len(order), 32):
            t = collate([rows[i] for i in order[s : s + 32]], tok.pad_token_id)
            nll, counts = response_nll(model(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).logits,
                                       t["input_ids"], t["assistant_mask"])
            loss = (nll * counts).sum() / counts.sum()
            loss.backward()
            opt.step()
            opt.zero_grad()
        log(f"base model pre-training: epoch {epoch + 1}/3, last batch NLL {loss.item():.3f}")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    tmp.rename(out)
    log(f"base model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, pre-trained on "
        f"{pretrain_rows} rows in {time.time() - t0:.0f}s → {out}")
    return str(out)


def base_config(args: argparse.Namespace, work: Path, model_path: str) -> LeadConfig:
    """The one training recipe every method shares (only selector, budget and seed change per run)."""
    # reuse_after_budget: every method presents budget × max_uses samples (the static ones train max_uses epochs),
    # so that methods differ in which samples they train on, not in how much they train
    common = dict(data_files=[str(work / "data")], output_dir=str(work / "runs"), eval_fraction=0.0,
                  eval_max_samples=None, max_rounds=10_000, num_workers=1, seed=0, num_cpus=4,
                  reuse_after_budget=True, cache_dir=str(args.cache_dir), dedup="none")  # duplicates are the test
    quick = dict(group_by="source", ifd_model="base") if args.quick else {}
    if args.model == "smollm2":
        # warm-up on 10% (80 rows of 800): its loss is the reference of utility: learnable, which a model that saw
        # 8 rows (the default 1%) could not tell apart from the base model's
        return LeadConfig.from_flat(**common, model_name_or_path="builtin:smollm2", use_lora=True, learning_rate=2e-4,
                          max_length=128, per_device_train_batch_size=8, use_gpu=args.use_gpu, warmup_fraction=0.1,
                          eval_batch_size=32, score_batch_size=32, **quick).validate()
    return LeadConfig.from_flat(**common, model_name_or_path=model_path, use_lora=False, learning_rate=1e-3, max_length=64,
                      per_device_train_batch_size=8, eval_batch_size=64, score_batch_size=64, **quick).validate()


def exact_match_of(run_dir: Path, eval_rows: list[tuple[list[dict], str]], cfg: LeadConfig, batch_size: int = 64,
                   max_new_tokens: int = 16) -> dict[str, float]:
    """Greedy exact match of the run's saved model on the held-out prompts: `accuracy` (the whole normalised
    answer) and `accuracy_number` (its last number), as lead_ray.eval.generate.exact_match scores them."""
    import torch

    from lead_ray.eval import load_eval_model
    from lead_ray.eval.generate import exact_match

    model, tok = load_eval_model(run_dir / "model", cfg, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    out = exact_match(model, tok, eval_rows, batch_size=batch_size, max_new_tokens=max_new_tokens)
    return {"accuracy": float(out["accuracy"]), "accuracy_number": float(out["accuracy_number"])}


def pool_module(args: argparse.Namespace):
    """The pool the model in use trains on: the task families (tiny) or the real-text pool (smollm2)."""
    return quality_text_pool if args.model == "smollm2" else quality_pool


def write_bench_pool(args: argparse.Namespace, folder: Path) -> dict[str, int]:
    if args.model == "smollm2":
        counts = quality_text_pool.write_pool(folder, args.train_rows, args.eval_rows)
        log(f"pool: {counts['train']} training rows of real text ({counts['noisy']} noisy, {counts['duplicate']} "
            f"near-duplicates), {counts['eval']} held-out rows ({counts['eval_arithmetic']} arithmetic)")
        return counts
    counts = quality_pool.write_pool(folder, args.per_family, args.eval_per_family)
    log(f"pool: {counts['train']} training rows ({args.per_family} per family), {counts['eval']} held-out rows")
    return counts


def selected_families(run_dir: Path, pool_dir: Path, noisy=quality_pool.NOISY, duplicate=quality_pool.DUPLICATE
                      ) -> dict[str, float]:
    """Shares of the run's unique selected rows that come from the noisy and the near-duplicate families (source
    names in `noisy` and `duplicate`: the NOISY and DUPLICATE of the pool in use)."""
    import pyarrow.parquet as pq

    ids = np.unique(pq.read_table(run_dir / "selections.parquet", columns=["id"]).column("id").to_numpy())
    source = pq.read_table(pool_dir / "pool.parquet", columns=["id", "source"]).sort_by("id").column("source")
    picked = np.asarray(source.to_pylist(), dtype=object)[ids]
    return {"noisy": float(np.isin(picked, list(noisy)).mean()),
            "duplicate": float(np.isin(picked, list(duplicate)).mean())}


def train_one(cfg: LeadConfig, prepared, method: str, budget: float, seed: int) -> tuple[LeadConfig, dict, dict]:
    """One run: (its config, the row of runs.csv without the evaluation columns, train_with_selection's output)."""
    from lead_ray.train.fit import train_with_selection

    run_cfg = cfg.replace(run_name=f"{method}-b{budget:g}-s{seed}", budget=budget, seed=seed,
                                  **METHODS[method])
    t = time.time()
    out = train_with_selection(run_cfg, prepared)
    train_seconds = time.time() - t
    metrics = [json.loads(line) for line in (run_cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    row = {"method": method, "budget": budget if method != "full" else 1.0, "seed": seed,
           "budget_samples": out["budget"], "unique_samples": out["num_unique"],
           "trained_samples": int(sum(m.get("num_samples", 0) for m in metrics if not m.get("final"))),
           "rounds": out["rounds"], "stop_reason": out["stop_reason"], "nll_before": out["nll_before"],
           "heldout_nll": out["nll_after"], "wall_seconds": train_seconds,
           "selection_seconds": out["selection_seconds"], **bandit_movement(run_cfg.run_dir)}
    return run_cfg, row, out


def bandit_movement(run_dir: Path) -> dict[str, float]:
    """How far EXP3 moved: the largest arm probability of the last round (1/K when it never moved), and the mean
    |ΔL′| over the rounds, in nats."""
    from lead_ray.runtime.run_files import read_run_files

    lines = read_run_files(run_dir).bandit
    probs = lines[-1]["arm_probs"] if lines else [math.nan]
    delta = [abs(a["delta_l"]) for line in lines for a in line["arms"]]
    return {"arm_prob_max": float(max(probs)), "mean_abs_delta_l": float(np.mean(delta)) if delta else math.nan}


def read_runs(path: Path) -> list[dict]:
    """The rows of an earlier runs.csv (numbers as numbers), for --resume."""
    def value(text: str):
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text

    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: value(v) for k, v in row.items()} for row in csv.DictReader(f)]


def run_all(args: argparse.Namespace, out: Path) -> list[dict]:
    from lead_ray.pipeline import prepare_stages
    from lead_ray.runtime.ray_init import init_ray

    work = Path(args.work).expanduser().resolve()
    write_bench_pool(args, work / "data")
    model_path = "builtin:smollm2" if args.model == "smollm2" else build_tiny_base(
        work / "base_model", Path(args.cache_dir).expanduser(), args.pretrain_rows)
    cfg = base_config(args, work, model_path)
    init_ray(cfg)
    t0 = time.time()
    prepared = prepare_stages(cfg, work / "prepared")
    prep_seconds = time.time() - t0
    log(f"preparation (ingest, embeddings, groups, IU, IFD, arms): {prep_seconds:.0f}s")
    held_out = [json.loads(line) for line in (work / "data" / "eval.jsonl").read_text().splitlines()]
    if args.model == "smollm2":  # exact match only where the answer is exact: the arithmetic rows
        held_out = [r for r in held_out if r["source"] == "arithmetic"]
    eval_rows = [(r["messages"][:-1], r["messages"][-1]["content"]) for r in held_out]
    # arithmetic answers ("999 divided by 99 is 10 remainder 9") take up to ~20 SmolLM2 tokens, digits one by one
    em_args = dict(batch_size=32, max_new_tokens=32) if args.model == "smollm2" else {}
    pool = pool_module(args)

    runs = [(m, b, s) for s in range(args.seeds) for b in args.budgets for m in args.methods
            if m != "full" or b == args.budgets[0]]
    rows = read_runs(out / "runs.csv") if args.resume else []  # each run is saved as it ends
    done = {(r["method"], float(r["budget"]) if r["method"] != "full" else args.budgets[0], int(r["seed"]))
            for r in rows}
    for i, (method, budget, seed) in enumerate(runs):
        if (method, budget, seed) in done:
            log(f"[{i + 1}/{len(runs)}] {method}-b{budget:g}-s{seed}: in {out / 'runs.csv'} already (--resume)")
            continue
        run_cfg, row, _ = train_one(cfg, prepared, method, budget, seed)
        em = exact_match_of(run_cfg.run_dir, eval_rows, run_cfg, **em_args)
        families = selected_families(run_cfg.run_dir, prepared.pool_dir, pool.NOISY, pool.DUPLICATE)
        scores = {"exact_match": em["accuracy"]}
        if args.model == "smollm2":
            scores["number_match"] = em["accuracy_number"]
        at = list(row).index("heldout_nll") + 1  # the columns of runs.csv in their usual order
        row = {**dict(list(row.items())[:at]), **scores, **dict(list(row.items())[at:]), "prep_seconds": prep_seconds,
               "share_noisy": families["noisy"], "share_duplicate": families["duplicate"]}
        rows.append(row)
        write_csv(rows, out / "runs.csv")
        log(f"[{i + 1}/{len(runs)}] {run_cfg.run.run_name}: NLL {row['heldout_nll']:.4f}, exact match "
            f"{row['exact_match']:.3f}, {row['unique_samples']}/{row['budget_samples']} unique, "
            f"{row['trained_samples']} trained, {row['wall_seconds']:.0f}s (selection "
            f"{row['selection_seconds']:.1f}s), noisy {row['share_noisy']:.2f}, duplicate {row['share_duplicate']:.2f}")
        if not args.keep_runs:
            shutil.rmtree(run_cfg.run_dir, ignore_errors=True)
    import ray

    ray.shutdown()  # no late worker log lines after the table: the last line stays the headline
    return rows


def _ratio(a: float, b: float) -> float:
    return a / b if b and math.isfinite(a) and math.isfinite(b) else math.nan


def rescore_timing(args: argparse.Namespace, out: Path) -> int:
    """iterative_rescore vs lead at one budget and seed, on real-text pools of args.timing_rows training rows:
    whole-run and selection-only times, their ratio per pool, and how each grows with the pool. Writes
    rescore_timing.csv (one row per pool; the *_growth columns are relative to the first pool)."""
    import ray

    from lead_ray.pipeline import prepare_stages
    from lead_ray.runtime.ray_init import init_ray

    work = Path(args.work).expanduser().resolve()
    results, problems = [], []
    for n in args.timing_rows:
        sub = work / f"timing-{n}"
        counts = quality_text_pool.write_pool(sub / "data", n, args.eval_rows)
        log(f"timing pool: {counts['train']} training rows, {counts['eval']} held-out rows")
        cfg = base_config(args, sub, "builtin:smollm2")
        init_ray(cfg)
        t0 = time.time()
        prepared = prepare_stages(cfg, sub / "prepared")
        prep_seconds = time.time() - t0
        log(f"preparation ({n} rows): {prep_seconds:.0f}s")
        res = {"pool_rows": counts["train"], "eval_rows": counts["eval"], "budget": TIMING_BUDGET,
               "prep_seconds": prep_seconds}
        for method in TIMING_METHODS:
            run_cfg, row, _ = train_one(cfg, prepared, method, TIMING_BUDGET, 0)
            key = "iterative" if method == "iterative_rescore" else method
            sel = row["selection_seconds"]
            res.update({"budget_samples": row["budget_samples"], f"{key}_wall_seconds": row["wall_seconds"],
                        f"{key}_selection_seconds": float(sel) if sel is not None else math.nan,
                        f"{key}_trained_samples": row["trained_samples"], f"{key}_heldout_nll": row["heldout_nll"]})
            problems += [f"{n} rows: {p}" for p in check([row])]
            log(f"{n} rows, {method}: {row['wall_seconds']:.0f}s (selection {res[f'{key}_selection_seconds']:.1f}s), "
                f"{row['unique_samples']}/{row['budget_samples']} unique, {row['trained_samples']} trained")
            if not args.keep_runs:
                shutil.rmtree(run_cfg.run_dir, ignore_errors=True)
        res["time_ratio"] = _ratio(res["lead_wall_seconds"], res["iterative_wall_seconds"])
        res["selection_time_ratio"] = _ratio(res["lead_selection_seconds"], res["iterative_selection_seconds"])
        results.append(res)
    ray.shutdown()
    first = results[0]
    for res in results:
        for key in ("lead_wall", "iterative_wall", "lead_selection", "iterative_selection"):
            res[f"{key}_growth"] = _ratio(res[f"{key}_seconds"], first[f"{key}_seconds"])
    write_csv(results, out / "rescore_timing.csv")
    (out / "rescore_timing_command.txt").write_text("python bench/quality.py " + " ".join(args.argv) + "\n")

    print()
    head = f"{'pool rows':>9} {'budget':>6} {'lead s':>8} {'iterative s':>11} {'ratio':>6} {'lead sel s':>10} " \
           f"{'iter sel s':>10} {'sel ratio':>9}"
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r['pool_rows']:>9d} {r['budget_samples']:>6d} {r['lead_wall_seconds']:>8.1f} "
              f"{r['iterative_wall_seconds']:>11.1f} {r['time_ratio']:>6.3f} {r['lead_selection_seconds']:>10.2f} "
              f"{r['iterative_selection_seconds']:>10.2f} {r['selection_time_ratio']:>9.4f}")
    for r in results[1:]:
        print(f"growth {first['pool_rows']} → {r['pool_rows']} rows: total time LEAD ×{r['lead_wall_growth']:.2f}, "
              f"iterative_rescore ×{r['iterative_wall_growth']:.2f}; selection time LEAD "
              f"×{r['lead_selection_growth']:.2f}, iterative_rescore ×{r['iterative_selection_growth']:.2f}")
    for line in problems:
        log(f"BUDGET CHECK FAILED: {line}")
    log(f"results in {out / 'rescore_timing.csv'}")
    print(" ".join([f"rescore_time_ratio_{r['pool_rows']}={r['time_ratio']:.3f}" for r in results]
                   + [f"selection_time_ratio_{r['pool_rows']}={r['selection_time_ratio']:.4f}" for r in results]),
          flush=True)
    return 1 if problems else 0


def timing_time_ratio(out: Path) -> tuple[float, int | None]:
    """(LEAD / iterative_rescore whole-run time ratio, pool rows) of the largest pool in out/rescore_timing.csv,
    or (nan, None) when there is no such file."""
    path = out / "rescore_timing.csv"
    if not path.exists():
        return math.nan, None
    with open(path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return math.nan, None
    largest = max(rows, key=lambda r: int(r["pool_rows"]))
    return float(largest["time_ratio"]), int(largest["pool_rows"])


def summarise(rows: list[dict]) -> list[dict]:
    """method × budget: mean and std over seeds of the quality and time columns."""
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        for budget in sorted({r["budget"] for r in rows if r["method"] == method}):
            cell = [r for r in rows if r["method"] == method and r["budget"] == budget]
            s = {"method": method, "budget": budget, "seeds": len(cell), "budget_samples": cell[0]["budget_samples"]}
            for key in ("heldout_nll", "exact_match", "number_match", "wall_seconds", "selection_seconds",
                        "trained_samples", "share_noisy", "share_duplicate"):
                if key not in cell[0]:
                    continue  # number_match: smollm2 only
                v = np.array([r[key] for r in cell], dtype=float)
                s[f"{key}_mean"], s[f"{key}_std"] = float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
            out.append(s)
    return out


def headline(table: list[dict], budgets: list[float]) -> tuple[float, float]:
    """(mean relative NLL gain of LEAD over random, LEAD's mean run time / iterative_rescore's), over budgets."""
    cell = {(s["method"], s["budget"]): s for s in table}
    gains = [(cell["random", b]["heldout_nll_mean"] - cell["lead", b]["heldout_nll_mean"])
             / cell["random", b]["heldout_nll_mean"] for b in budgets if ("lead", b) in cell and ("random", b) in cell]
    times = [(cell["lead", b]["wall_seconds_mean"], cell["iterative_rescore", b]["wall_seconds_mean"])
             for b in budgets if ("lead", b) in cell and ("iterative_rescore", b) in cell]
    gain = float(np.mean(gains)) if gains else math.nan
    ratio = sum(a for a, _ in times) / sum(b for _, b in times) if times else math.nan
    return gain, ratio


def print_table(table: list[dict]) -> None:
    number = "number_match_mean" in table[0]
    head = f"{'method':<20} {'budget':>6} {'n':>4} {'held-out NLL':>17} {'exact match':>15} " \
           + (f"{'number match':>15} " if number else "") + f"{'trained':>8} {'wall s':>8} {'select s':>9}"
    print(head)
    print("-" * len(head))
    for s in table:
        print(f"{s['method']:<20} {s['budget']:>6.3f} {s['budget_samples']:>4d} "
              f"{s['heldout_nll_mean']:>9.4f} ± {s['heldout_nll_std']:.4f} "
              f"{s['exact_match_mean']:>7.3f} ± {s['exact_match_std']:.3f} "
              + (f"{s['number_match_mean']:>7.3f} ± {s['number_match_std']:.3f} " if number else "")
              + f"{s['trained_samples_mean']:>8.0f} {s['wall_seconds_mean']:>8.1f} {s['selection_seconds_mean']:>9.2f}",
              flush=True)
    print()
    print("share of the unique selected rows from noisy / near-duplicate families (mean ± std over seeds)")
    head = f"{'method':<20} {'budget':>6} {'noisy':>15} {'duplicate':>15}"
    print(head)
    print("-" * len(head))
    for s in table:
        print(f"{s['method']:<20} {s['budget']:>6.3f} {s['share_noisy_mean']:>7.3f} ± {s['share_noisy_std']:.3f} "
              f"{s['share_duplicate_mean']:>7.3f} ± {s['share_duplicate_std']:.3f}", flush=True)


def plot(table: list[dict], path: Path, pool_name: str = "the structured benchmark pool") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(19, 5.2))
    budgets = sorted({s["budget"] for s in table if s["method"] != "full"})
    methods = [m for m in dict.fromkeys(s["method"] for s in table) if m != "full"]
    full = next((s for s in table if s["method"] == "full"), None)
    for ax, key, label in ((axes[0], "heldout_nll", "held-out response NLL (lower is better)"),
                           (axes[1], "exact_match", "held-out exact match (higher is better)")):
        for m in methods:
            cells = [next((s for s in table if s["method"] == m and s["budget"] == b), None) for b in budgets]
            xs = [100 * b for b, c in zip(budgets, cells) if c]
            ax.errorbar(xs, [c[f"{key}_mean"] for c in cells if c], yerr=[c[f"{key}_std"] for c in cells if c],
                        marker="o", capsize=3, label=m, lw=2.2 if m == "lead" else 1.2)
        if full:
            ax.axhline(full[f"{key}_mean"], color="black", ls="--", lw=1, label="full pool")
        ax.set_xlabel("budget (% of the pool, unique samples)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[2].legend(*axes[0].get_legend_handles_labels(), fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    for m in methods:
        cells = [s for s in table if s["method"] == m]
        axes[2].plot([100 * s["budget"] for s in cells], [s["wall_seconds_mean"] for s in cells], marker="o", label=m)
    axes[2].set_xlabel("budget (% of the pool, unique samples)")
    axes[2].set_ylabel("run time per run, s (training + selection)")
    axes[2].grid(alpha=0.3)
    fig.suptitle(f"LEAD vs baselines on {pool_name} (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def replot(out: Path, pool_name: str = "the structured benchmark pool") -> None:
    """Redraw quality.png from a saved table.csv (no runs)."""
    with open(out / "table.csv") as f:
        table = [{k: v if k == "method" else float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    plot(table, out / "quality.png", pool_name)


def check(rows: list[dict]) -> list[str]:
    """Internal consistency: every run trained exactly its budget of unique samples, never more."""
    problems = []
    for r in rows:
        if r["unique_samples"] != r["budget_samples"]:
            problems.append(f"{r['method']} b={r['budget']} seed {r['seed']}: {r['unique_samples']} unique samples "
                            f"for a budget of {r['budget_samples']} ({r['stop_reason']})")
    return problems


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))  # every row's keys
        w.writeheader()
        w.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a small subset in a few minutes")
    p.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    p.add_argument("--use-gpu", action="store_true", help="train on GPU (with --model smollm2)")
    p.add_argument("--rescore-timing", action="store_true",
                   help="(smollm2) time iterative_rescore vs lead on two real-text pools instead of the table")
    p.add_argument("--timing-rows", default="300,600", help="training rows of the --rescore-timing pools")
    p.add_argument("--work", default=None,
                   help="scratch folder (pool, base model, runs); default /tmp/lead-ray-quality[-smollm2]")
    p.add_argument("--out", default=None, help="where the CSVs and PNG go (default bench/results/quality[-quick], "
                   "bench/results/quality-smollm2-cpu with --model smollm2)")
    p.add_argument("--cache-dir", default="~/.cache/lead-ray")
    p.add_argument("--methods", default=None, help="comma-separated subset of " + ",".join(METHODS))
    p.add_argument("--budgets", default=None, help="comma-separated fractions of the pool")
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--per-family", type=int, default=None, help="(tiny) training rows per task family")
    p.add_argument("--eval-per-family", type=int, default=None, help="(tiny) held-out rows per learnable family")
    p.add_argument("--pretrain-rows", type=int, default=None, help="rows the tiny base model is pre-trained on")
    p.add_argument("--train-rows", type=int, default=None, help="(smollm2) training rows of the real-text pool")
    p.add_argument("--eval-rows", type=int, default=None, help="(smollm2) held-out rows of the real-text pool")
    p.add_argument("--keep-runs", action="store_true", help="keep every run folder under --work/runs")
    p.add_argument("--resume", action="store_true",
                   help="keep the runs already in --out/runs.csv (saved after each run) and do only the others")
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    preset = QUICK if args.quick else FULL
    if args.model == "smollm2":
        preset = dict(FULL, **(SMOLLM2_QUICK if args.quick else SMOLLM2))
    elif args.rescore_timing:
        p.error("--rescore-timing needs --model smollm2 (the tiny table has iterative_rescore in it already)")
    args.budgets = [float(b) for b in args.budgets.split(",")] if args.budgets else preset["budgets"]
    args.methods = args.methods.split(",") if args.methods else preset["methods"]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        p.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    missing = sorted({k for m in (*args.methods, *TIMING_METHODS) for k in METHODS[m]} - set(config_fields()))
    if missing:  # fail now, not after the preparation
        p.error(f"config key(s) {missing} used by METHODS are not config keys (lead_ray/config)")
    for key in ("seeds", "per_family", "eval_per_family", "pretrain_rows", "train_rows", "eval_rows"):
        if getattr(args, key) is None:
            setattr(args, key, preset.get(key))
    args.timing_rows = sorted(int(n) for n in args.timing_rows.split(","))
    if args.work is None:
        args.work = "/tmp/lead-ray-quality" + ("-smollm2" if args.model == "smollm2" else "")
    if args.model == "smollm2":
        name = "quality" + ("-quick" if args.quick else "") + "-smollm2" + ("-gpu" if args.use_gpu else "-cpu")
    else:
        name = "quality" + ("-quick" if args.quick else "")
    out = Path(args.out or Path(__file__).resolve().parent / "results" / name)
    out.mkdir(parents=True, exist_ok=True)
    if args.rescore_timing:
        return rescore_timing(args, out)
    t0 = time.time()
    rows = run_all(args, out)
    table = summarise(rows)
    write_csv(rows, out / "runs.csv")
    write_csv(table, out / "table.csv")
    plot(table, out / "quality.png",
         "the real-text pool (SmolLM2-135M, LoRA)" if args.model == "smollm2" else "the structured benchmark pool")
    (out / "command.txt").write_text("python bench/quality.py " + " ".join(args.argv)
                                     + f"\n# total {time.time() - t0:.0f}s\n")
    print()
    print_table(table)
    problems = check(rows)
    for line in problems:
        log(f"BUDGET CHECK FAILED: {line}")
    log(f"total {time.time() - t0:.0f}s; results in {out}")
    gain, ratio = headline(table, args.budgets)
    if math.isnan(ratio) and "iterative_rescore" not in args.methods:
        ratio, pool_rows = timing_time_ratio(out)
        log(f"lead_vs_iterative_time_ratio: from {out / 'rescore_timing.csv'} ({pool_rows}-row pool, budget "
            f"{TIMING_BUDGET:g}, one seed)" if pool_rows else
            "lead_vs_iterative_time_ratio: nan (no iterative_rescore here; run --rescore-timing first)")
    print(f"lead_vs_random_nll_gain={gain:.4f} lead_vs_iterative_time_ratio={ratio:.3f}", flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
