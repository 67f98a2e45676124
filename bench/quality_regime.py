"""Does LEAD select better data than random in the paper's regime? SmolLM2-135M + LoRA on ≥ 5,000-row real-text pools.

The pools (bench/quality_regime_pool.py) mix six real-text sources, four with exact answers, with 20% recorded,
hidden noise (wrong answers, mismatched answers, junk) and 5% near-duplicates. The `dev` pool (an even mix) is the
only one settings are chosen on; the `test` pool (a skewed mix, disjoint rows) is reported. Each pool's clean twin is
the same prepared pool with the noisy rows made unselectable, so LEAD against random on both tells noise from skew.

Two steps, both resumable, on a preparation made once per pool and cached in --work:

    python bench/quality_regime.py --pool dev --screen            # dry runs of every candidate (no training): free
    python bench/quality_regime.py --pool test --resume           # the training matrix, one runs.csv row per run

A dry run (lead_ray/select/screen.py) plays the selector with losses that fall by 10% per use from the base model's,
and reports what it picks: noisy share, source KL, coverage. Training runs are the real `train_with_selection`
(SelectionService + TorchTrainer) with only the selection settings, budget and seed changed; every run trains
budget × max_uses samples (`reuse_after_budget`), so methods differ in which rows they train, not how much. Each
trained model is then measured on: held-out NLL (pooled, and macro over sources), greedy exact match on the held-out
rows with exact answers, the shifted held-out set (harder or unseen variants), and contrastive probes (how much the
model prefers the correct answer to a wrong, mismatched or junk one). The base model is measured once per pool.

Writes to --out: runs.csv (one row per run, with its time split), table.csv (means, and the paired difference from
random with a 95% t-interval, per pool × method × budget), selections/<run>.parquet (each run's selected ids),
quality.png, command.txt and output.txt. The last line printed is
`default_vs_random_nll_gain=… paper_vs_random_nll_gain=… default_noisy_share=… random_noisy_share=…` (macro held-out
NLL, random minus method, in nats, averaged over budgets; noisy share of the unique selected rows).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality_regime_pool as regime_pool  # noqa: E402
from quality import read_runs, write_csv  # noqa: E402

from lead_ray.config import PRESETS, LeadConfig  # noqa: E402

# Every LEAD method is spelled out over the paper's settings, so a change of the library's defaults never changes
# what a method name in runs.csv means. "paper": `preset: paper`, LEAD as lead-ray first implemented it (one row
# per (arm, group) cell at least). "default": the library's default since stop 34 (README "Selection quality").
# "kmeans_trunc0.5": the dev screen's first pick, the bench's default before that (IFD k-means arms).
PAPER: dict[str, Any] = dict(PRESETS["paper"])
KMEANS_TRUNC: dict[str, Any] = {**PAPER, "quota": "proportional", "truncate_top": 0.5}
DEFAULT: dict[str, Any] = {**KMEANS_TRUNC, "arm_by": "ifd_in_group"}
METHODS: dict[str, dict[str, Any]] = {
    "default": DEFAULT, "paper": PAPER, "random": {"selector": "random"}, "longest": {"selector": "longest"},
    "kmeans_trunc0.5": KMEANS_TRUNC,
    "kmeans_trunc0.5_demote": {**KMEANS_TRUNC, "demote_after": 2},
    "kmeans_trunc0.5_b0.9": {**KMEANS_TRUNC, "smoothing": 0.9},
    "kmeans_trunc0.5_groups": {**KMEANS_TRUNC, "group_budget": "proportional"},
    # task groups from the rows' `source` instead of k-means on instruction embeddings (a preparation key: the run
    # trains on the enriched pool with each row's group replaced by its source's, as `group_by: source` builds it)
    "kmeans_trunc0.5_bysource": {**KMEANS_TRUNC, "group_by": "source"},
    # every arm in every round, in proportion to the bandit's probabilities: the mix no longer hangs on ~11 draws
    # (the dev screen's prop_arms_trunc0.2: noisy share and source KL both below random's, on every seed)
    "prop_arms_trunc0.2": {**PAPER, "quota": "proportional", "arm_allocation": "proportional", "truncate_top": 0.2},
}
# the dev screen: each remedy alone on the paper's settings, then combined
CANDIDATES: dict[str, dict[str, Any]] = {
    "paper": PAPER,
    "paper_b0.9": {"smoothing": 0.9},
    "proportional": {"quota": "proportional"},
    "proportional_b0.9": {"quota": "proportional", "smoothing": 0.9},
    "prop_arms": {"quota": "proportional", "arm_allocation": "proportional"},
    "prop_arms_x3": {"quota": "proportional", "arms_per_round": 3},
    **{f"trunc{q:g}": {"quota": "proportional", "truncate_top": q} for q in (0.1, 0.2, 0.3, 0.5)},
    **{f"prop_arms_trunc{q:g}": {"quota": "proportional", "arm_allocation": "proportional", "truncate_top": q}
       for q in (0.1, 0.2, 0.3)},
    **{f"ifd_max{t:g}": {"quota": "proportional", "ifd_max": t} for t in (0.8, 0.9)},
    **{f"trunc{q:g}_groups": {"quota": "proportional", "truncate_top": q, "group_budget": "proportional"}
       for q in (0.2, 0.5)},
    # arms by IFD quantile inside each task group (stop 34): a drawn arm is a difficulty level across every group
    **{f"qarms_trunc{q:g}": {"quota": "proportional", "truncate_top": q, "arm_by": "ifd_in_group"}
       for q in (0.0, 0.2, 0.5)},
    "paper_qarms": {"arm_by": "ifd_in_group"},
    "random": {"selector": "random"}, "longest": {"selector": "longest"},
}
CANDIDATES = {name: o if "selector" in o else {**PAPER, **o} for name, o in CANDIDATES.items()}  # as METHODS
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def log(msg: str) -> None:
    print(f"[quality-regime] {msg}", flush=True)


def base_config(args: argparse.Namespace, work: Path) -> LeadConfig:
    """The one recipe every run shares. IFD from the base model (`ifd_model: base`): one extra short pass instead
    of a warm-up run and two passes, which on 2 cores is the difference between 20 and 45 minutes per pool."""
    return LeadConfig.from_flat(data_files=[str(work / "data" / "train.jsonl")], output_dir=str(work / "runs"),
                      eval_fraction=0.0, eval_max_samples=1, max_rounds=10_000, num_workers=1, num_cpus=4,
                      reuse_after_budget=True, cache_dir=str(args.cache_dir), dedup="none",
                      model_name_or_path="builtin:smollm2", use_lora=True, learning_rate=2e-4, max_length=128,
                      per_device_train_batch_size=8, ifd_model="base", num_groups=args.num_groups, arm_by="ifd",
                      eval_batch_size=32, score_batch_size=32).validate()


@dataclasses.dataclass
class Pool:
    """One prepared pool: its columns in id order, the noise labels, and the held-out sets."""

    name: str
    prepared: Any
    columns: dict[str, np.ndarray]
    noisy: np.ndarray  # per pool id
    data: Path

    def variant(self, twin: str, group_by: str, arm_by: str = "ifd") -> dict[str, np.ndarray]:
        """The columns of a twin: `clean` makes the noisy rows unselectable; `group_by: source` numbers the task
        groups by source (sorted), and `arm_by: ifd_in_group` remakes the arms, as the preparation does."""
        from lead_ray.prep.cluster import difficulty_arms

        cols = dict(self.columns)
        if group_by == "source":
            cols["group"] = np.unique(cols["source"].astype(str), return_inverse=True)[1].astype(np.int64)
        if arm_by == "ifd_in_group":
            arm, train = cols["arm"].copy(), cols["arm"] >= 0
            arm[train] = difficulty_arms(arm_by, {"ifd": cols["ifd"][train]}, cols["group"][train],
                                         int(cols["arm"].max()) + 1, seed=0)
            cols["arm"] = arm
        if twin == "clean":
            cols["arm"] = np.where(self.noisy, -1, cols["arm"])
        return cols


def load_pool(args: argparse.Namespace, name: str, work: Path) -> tuple[Pool, LeadConfig, dict[str, float]]:
    from lead_ray.pipeline import prepare_stages
    from lead_ray.runtime.folders import claim_folder
    from lead_ray.runtime.ray_init import init_ray

    counts = regime_pool.write_pool(work / "data", name, args.train_rows)
    log(f"{name} pool: {counts}")
    cfg = base_config(args, work)
    times = {}
    t = time.time()
    init_ray(cfg)
    times["ray_init_seconds"] = time.time() - t
    t = time.time()
    claim_folder(work / "prepared")  # lead-ray's before the seeded scores go in, or prepare_stages refuses it
    seed_scores(Path(args.out) / "scores" / name, work / "prepared" / "prep")
    prepared = prepare_stages(cfg, work / "prepared")
    seed_scores(work / "prepared" / "prep", Path(args.out) / "scores" / name, replace_stale=True)
    times["prep_seconds"] = time.time() - t
    log(f"{name}: Ray {times['ray_init_seconds']:.0f}s, preparation {times['prep_seconds']:.0f}s (cached after once)")
    return Pool(name, prepared, *prepared_columns(prepared.enriched, prepared.pool_dir, work / "data"), work / "data"), \
        cfg, times


def prepared_columns(enriched: Path, pool_dir: Path, data: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A prepared pool's columns in id order, and its noise labels (from the data file; hidden from lead-ray)."""
    import pyarrow.parquet as pq

    columns = {k: np.asarray(v) for k, v in pq.read_table(enriched).to_pydict().items()}
    pool = pq.read_table(pool_dir / "pool.parquet", columns=["id", "line"]).to_pydict()
    lines = [json.loads(s) for s in (data / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    noisy = np.zeros(len(columns["id"]), dtype=bool)
    for i, line in zip(pool["id"], pool["line"], strict=True):
        noisy[i] = bool(lines[line - 1].get("noise"))
    return columns, noisy


def seed_scores(src: Path, dst: Path, replace_stale: bool = False) -> None:
    """Copy the base-model scores and their stage marker where they are missing (or, with `replace_stale`, where
    dst's marker holds another key): the scoring pass is the slow part of a preparation on a CPU (about 40 minutes a
    pool here), so they are kept with the results, and the pipeline reuses them when its stage key (the data, the
    model, the backend) still matches, and redoes them when not."""
    marker = "score_base.parquet.stage.json"
    stale = replace_stale and (src / marker).exists() and (dst / marker).exists() and \
        (src / marker).read_text() != (dst / marker).read_text()
    for name in ("score_base.parquet", marker):
        if (src / name).exists() and (stale or not (dst / name).exists()):
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / name, dst / name)


def selection_params(cfg: LeadConfig, overrides: dict[str, Any], budget: int, seed: int):
    from lead_ray.select.params import SelectionParams

    return SelectionParams.from_config(cfg.replace(**overrides, seed=seed, budget=budget), budget)


def budget_of(columns: dict[str, np.ndarray], fraction: float) -> int:
    return max(2, int(round(fraction * int((columns["arm"] >= 0).sum()))))


def screen(args: argparse.Namespace, pool: Pool, cfg: LeadConfig, out: Path) -> None:
    """Dry runs of every candidate on both twins, every budget and seed: what each selects, in milliseconds."""
    from lead_ray.select.screen import arm_probability_trace, decaying_loss, dry_run, selection_diagnostics
    from lead_ray.select.strategies import build_selector

    rows = []
    for twin in ("noisy", "clean"):
        for name, overrides in CANDIDATES.items():
            cols = pool.variant(twin, overrides.get("group_by", cfg.prep.group_by),
                                overrides.get("arm_by", cfg.prep.arm_by))
            for budget in args.budgets:
                for seed in range(args.seeds):
                    b = budget_of(cols, budget)
                    sel = dry_run(build_selector(cols, selection_params(cfg, overrides, b, seed)),
                                  decaying_loss(cols["iu0"]))
                    ids = sel.selections()["id"].astype(np.int64)
                    d = selection_diagnostics(ids, cols["source"], cols["arm"], cols["group"], pool.noisy)
                    trace = arm_probability_trace(sel)
                    rows.append({"pool": pool.name, "twin": twin, "method": name, "budget": budget, "seed": seed,
                                 "budget_samples": b, "rounds": sel.round, "stop_reason": sel.stop_reason, **d,
                                 "arm_prob_max": float(trace.max(axis=1).mean()) if len(trace) else math.nan})
    write_csv(rows, out / "screen.csv")
    pick = screen_pick(rows)
    keys = ("noisy_share_unique", "noisy_share_trained", "source_kl", "source_coverage", "cell_coverage", "rounds")
    print(f"{'twin':<6} {'method':<22} {'budget':>6} " + " ".join(f"{k:>19}" for k in keys))
    for twin in ("noisy", "clean"):
        for name in CANDIDATES:
            for budget in args.budgets:
                cell = [r for r in rows if (r["twin"], r["method"], r["budget"]) == (twin, name, budget)]
                print(f"{twin:<6} {name:<22} {budget:>6.3f} "
                      + " ".join(f"{np.mean([r[k] for r in cell]):>19.3f}" for k in keys))
    print(f"screen pick: {pick} (the rule in screen_pick)", flush=True)


def screen_pick(rows: list[dict]) -> str:
    """The rule fixed before the screen ran: on the noisy twin, among LEAD candidates that reach every source in
    every dry run and whose source KL is at most max(0.05, twice random's), the lowest noisy share of unique rows (mean over budgets
    and seeds); ties go to the lower KL."""
    def mean(name: str, key: str) -> float:
        return float(np.mean([r[key] for r in rows if r["twin"] == "noisy" and r["method"] == name]))

    lead = [n for n in CANDIDATES if n not in ("random", "longest")]
    ok = [n for n in lead if min(r["source_coverage"] for r in rows if r["twin"] == "noisy" and r["method"] == n)
          == 1.0 and mean(n, "source_kl") <= max(0.05, 2 * mean("random", "source_kl"))]
    return min(ok or lead, key=lambda n: (round(mean(n, "noisy_share_unique"), 3), mean(n, "source_kl")))


def _store(tokenizer, rows: list[list[dict]], max_length: int):
    """An in-memory row store (`get(i)` → input ids, assistant mask) of message lists, for rows outside the pool."""
    from lead_ray.data.tokenize import tokenize_messages

    class Rows:
        def __init__(self) -> None:
            self.rows = [tokenize_messages(tokenizer, m, max_length) for m in rows]

        def get(self, i: int):
            return self.rows[i]

    return Rows()


def row_nll(model, tokenizer, messages: list[list[dict]], batch_size: int, max_length: int) -> np.ndarray:
    """Mean response NLL of each message list (the one training and held-out NLL use)."""
    import torch

    from lead_ray.models.nll import batch_response_nll

    store = _store(tokenizer, messages, max_length)
    parts = [nll.double().numpy() for nll, _ in batch_response_nll(
        model, store, np.arange(len(messages)), batch_size, tokenizer.pad_token_id, torch.device("cpu"))]
    return np.concatenate(parts) if parts else np.zeros(0)


def measure(model, tokenizer, pool: Pool, batch_size: int = 32, max_length: int = 128) -> dict[str, float]:
    """The capability metrics of one model: held-out NLL pooled and macro over sources, exact match, shifted
    held-out NLL (macro), and the contrastive probes."""
    import pyarrow.parquet as pq
    import torch

    from lead_ray.data.store import RowStore
    from lead_ray.eval.generate import exact_match, split_prompt
    from lead_ray.eval.nll import heldout_nll

    cols = pool.columns
    eval_ids = cols["id"][cols["split"] == "eval"]
    sources = cols["source"][eval_ids]
    nll = heldout_nll(model, RowStore(pool.prepared.pool_dir / "pool.arrow"), eval_ids, {"source": sources},
                      batch_size, tokenizer.pad_token_id, torch.device("cpu"))
    by_source = {s: v["nll"] for s, v in nll["by"]["source"].items()}
    out = {"heldout_nll": nll["nll"], "heldout_nll_macro": float(np.mean(list(by_source.values()))),
           **{f"heldout_nll/{s}": v for s, v in sorted(by_source.items())}}

    messages = pq.read_table(pool.prepared.pool_dir / "pool.parquet", columns=["id", "messages"]).to_pydict()
    text = dict(zip(messages["id"], messages["messages"], strict=True))
    exact = [split_prompt(json.loads(text[int(i)])) for i, s in zip(eval_ids, sources, strict=True)
             if regime_pool.is_exact(str(s))]
    em = exact_match(model, tokenizer, [p for p in exact if p is not None], batch_size, max_new_tokens=24)
    out.update(exact_match=float(em["accuracy"]), exact_match_rows=len(exact))

    # every other shifted row and probe (20 per source each): on 2 cores each 100 sequences cost ~15 s per run
    shifted = [json.loads(s) for s in (pool.data / "shifted.jsonl").read_text(encoding="utf-8").splitlines()][::2]
    nll_shift = row_nll(model, tokenizer, [r["messages"] for r in shifted], batch_size, max_length)
    shift_sources = np.array([r["source"] for r in shifted])
    out["shifted_nll_macro"] = float(np.mean([nll_shift[shift_sources == s].mean() for s in np.unique(shift_sources)]))

    probes = [json.loads(s) for s in (pool.data / "probes.jsonl").read_text(encoding="utf-8").splitlines()][::2]
    pairs = [[*p["messages"], {"role": "assistant", "content": answer}] for p in probes
             for answer in (p["correct"], p["wrong"])]
    nll_pairs = row_nll(model, tokenizer, pairs, batch_size, max_length).reshape(-1, 2)
    margin = nll_pairs[:, 1] - nll_pairs[:, 0]  # > 0: the correct answer is the more likely
    kinds = np.array([p["kind"] for p in probes])
    out.update(probe_accuracy=float((margin > 0).mean()), probe_margin=float(margin.mean()),
               **{f"probe_accuracy/{k}": float((margin[kinds == k] > 0).mean()) for k in np.unique(kinds)})
    return out


def base_metrics(args: argparse.Namespace, pool: Pool, cfg: LeadConfig, work: Path) -> dict[str, float]:
    """The base model's metrics, once per pool (cached in --work)."""
    path = work / "base_metrics.json"
    if path.exists():
        return json.loads(path.read_text())
    import torch

    from lead_ray.eval import load_eval_model
    from lead_ray.models.load import resolve_model_path

    t = time.time()
    model, tok = load_eval_model(Path(resolve_model_path(cfg.model.model_name_or_path, cfg.cache_path)), cfg,
                                 torch.device("cpu"))
    result = {**measure(model, tok, pool), "base_eval_seconds": time.time() - t}
    path.write_text(json.dumps(result, indent=1))
    return result


def train_one(args: argparse.Namespace, pool: Pool, cfg: LeadConfig, method: str, twin: str, budget: float,
              seed: int, out: Path) -> dict[str, Any]:
    """One training run and its measurement: a row of runs.csv."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from lead_ray.eval import load_eval_model
    from lead_ray.select.screen import selection_diagnostics
    from lead_ray.train.fit import train_with_selection

    group_by = METHODS[method].get("group_by", cfg.prep.group_by)
    arm_by = METHODS[method].get("arm_by", cfg.prep.arm_by)
    cols = pool.variant(twin, group_by, arm_by)
    prepared = pool.prepared
    if twin == "clean" or (group_by, arm_by) != (cfg.prep.group_by, cfg.prep.arm_by):  # written once per variant
        path = prepared.enriched.with_name(f"enriched_{twin}_{group_by}_{arm_by}.parquet")
        if not path.exists():
            table = pq.read_table(prepared.enriched)
            for key in ("arm", "group"):
                table = table.set_column(table.schema.get_field_index(key), key, pa.array(cols[key]))
            pq.write_table(table, path)
        prepared = dataclasses.replace(prepared, enriched=path)
    b = budget_of(cols, budget)
    name = run_name(pool.name, twin, method, budget, seed)
    run_cfg = cfg.replace(run_name=name, budget=b, seed=seed, **METHODS[method])
    t = time.time()
    res = train_with_selection(run_cfg, prepared)
    train_seconds = time.time() - t
    t = time.time()
    model, tok = load_eval_model(run_cfg.run_dir / "model", run_cfg, torch.device("cpu"))
    if hasattr(model, "merge_and_unload"):  # the same function, without peft's per-layer detour at every step
        model = model.merge_and_unload()
    metrics = measure(model, tok, pool)
    eval_seconds = time.time() - t
    sel = pq.read_table(run_cfg.run_dir / "selections.parquet")
    (out / "selections").mkdir(exist_ok=True)
    pq.write_table(sel, out / "selections" / f"{name}.parquet")
    ids = sel.column("id").to_numpy()
    diag = {**selection_diagnostics(ids, cols["source"], cols["arm"], cols["group"], pool.noisy),
            **source_shares(ids, cols["source"])}
    bandit = [json.loads(line) for line in (run_cfg.run_dir / "bandit.jsonl").read_text().splitlines()]
    probs = np.array([line["arm_probs"] for line in bandit]) if bandit else np.zeros((0, 1))
    if not args.keep_runs:
        shutil.rmtree(run_cfg.run_dir, ignore_errors=True)
    return {"pool": pool.name, "twin": twin, "method": method, "budget": budget, "seed": seed, "budget_samples": b,
            "unique_samples": res["num_unique"], "rounds": res["rounds"], "stop_reason": res["stop_reason"],
            **metrics, **diag, "arm_prob_max_mean": float(probs.max(axis=1).mean()) if len(probs) else math.nan,
            "arm_probs_last": " ".join(f"{p:.3f}" for p in (probs[-1] if len(probs) else [])),
            "train_seconds": train_seconds, "eval_seconds": eval_seconds}


def source_shares(ids: np.ndarray, source: np.ndarray) -> dict[str, float]:
    """Each source's share of the unique selected rows (`share/<source>`): where a method's macro NLL moves, this
    says whether it is the mix or the rows within a source."""
    picked = source[np.unique(ids)]
    return {f"share/{s}": float((picked == s).mean()) for s in np.unique(source)}


def run_name(pool: str, twin: str, method: str, budget: float, seed: int) -> str:
    """A training run's name: its folder, and its selections' file under --out/selections."""
    return f"{pool}-{twin}-{method}-b{float(budget):g}-s{int(seed)}"


def selected_ids(out: Path, row: dict) -> np.ndarray:
    """The ids a runs.csv row's run trained (one per use), from its kept selections."""
    import pyarrow.parquet as pq

    name = run_name(row["pool"], row["twin"], row["method"], row["budget"], row["seed"])
    return pq.read_table(out / "selections" / f"{name}.parquet", columns=["id"]).column("id").to_numpy()


def fill_source_shares(rows: list[dict], pool: Pool, out: Path) -> None:
    """`share/<source>` for rows written before it was a column, from the run's kept selections."""
    for r in rows:
        if not any(k.startswith("share/") for k in r) and r["pool"] == pool.name:
            r.update(source_shares(selected_ids(out, r), pool.columns["source"]))


METRICS = ("heldout_nll_macro", "heldout_nll", "exact_match", "shifted_nll_macro", "probe_accuracy", "probe_margin",
           "noisy_share_unique", "noisy_share_trained", "source_kl", "source_coverage", "cell_coverage")
LOWER_IS_BETTER = {"heldout_nll_macro", "heldout_nll", "shifted_nll_macro"}


def paired(rows: list[dict], method: str, metric: str, pool: str, twin: str, budget: float) -> dict[str, float]:
    """The mean paired difference from random over seeds, as a gain (positive: the method is better), with a 95%
    t-interval."""
    mine = {r["seed"]: r[metric] for r in rows if (r["pool"], r["twin"], r["method"], r["budget"]) ==
            (pool, twin, method, budget)}
    rand = {r["seed"]: r[metric] for r in rows if (r["pool"], r["twin"], r["method"], r["budget"]) ==
            (pool, twin, "random", budget)}
    seeds = sorted(set(mine) & set(rand))
    sign = -1.0 if metric in LOWER_IS_BETTER or metric.startswith("heldout_nll/") else 1.0
    d = np.array([sign * (float(mine[s]) - float(rand[s])) for s in seeds])
    if len(d) < 2:
        return {"n": len(d), "gain": float(d.mean()) if len(d) else math.nan, "lo": math.nan, "hi": math.nan}
    half = T_975.get(len(d) - 1, 1.96) * d.std(ddof=1) / math.sqrt(len(d))
    return {"n": len(d), "gain": float(d.mean()), "lo": float(d.mean() - half), "hi": float(d.mean() + half)}


def summarise(rows: list[dict]) -> list[dict]:
    table = []
    for key in dict.fromkeys((r["pool"], r["twin"], r["method"], r["budget"]) for r in rows):
        cell = [r for r in rows if (r["pool"], r["twin"], r["method"], r["budget"]) == key]
        s = dict(zip(("pool", "twin", "method", "budget"), key, strict=True), seeds=len(cell))
        for m in METRICS:
            s[f"{m}_mean"] = float(np.mean([float(r[m]) for r in cell]))
        for m in ("heldout_nll_macro", "exact_match", "shifted_nll_macro", "probe_accuracy"):
            p = paired(rows, key[2], m, *key[:2], key[3]) if key[2] != "random" else {}
            for k in ("gain", "lo", "hi"):
                s[f"{m}_gain_vs_random_{k}"] = p.get(k, math.nan)
        for m in sorted(k for k in cell[0] if k.startswith(("share/", "heldout_nll/"))):
            s[f"{m}_mean"] = float(np.mean([float(r[m]) for r in cell]))
            if m.startswith("heldout_nll/") and key[2] != "random":  # where the macro gain comes from
                s[f"{m}_gain_vs_random"] = paired(rows, key[2], m, *key[:2], key[3])["gain"]
        s["train_seconds_mean"] = float(np.mean([r["train_seconds"] for r in cell]))
        s["eval_seconds_mean"] = float(np.mean([r["eval_seconds"] for r in cell]))
        table.append(s)
    return table


def plot(table: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [s for s in table if s["method"] != "random"]
    fig, axes = plt.subplots(1, 2, figsize=(14, 0.45 * len(cells) + 2))
    labels = [f"{s['pool']}/{s['twin']} {s['method']} {100 * s['budget']:g}%" for s in cells]
    y = np.arange(len(cells))
    for ax, metric, title in ((axes[0], "heldout_nll_macro", "macro held-out NLL gain over random (nats)"),
                              (axes[1], "exact_match", "exact-match gain over random")):
        gain = np.array([s[f"{metric}_gain_vs_random_gain"] for s in cells])
        lo = np.array([s[f"{metric}_gain_vs_random_lo"] for s in cells])
        hi = np.array([s[f"{metric}_gain_vs_random_hi"] for s in cells])
        ax.errorbar(gain, y, xerr=[np.nan_to_num(gain - lo), np.nan_to_num(hi - gain)], fmt="o", capsize=3)
        ax.axvline(0, color="black", lw=1)
        ax.set_yticks(y, labels, fontsize=8)
        ax.set_title(title + " (paired, 95% CI)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def headline(table: list[dict], pool: str) -> str:
    def cells(method: str) -> list[dict]:
        return [s for s in table if (s["pool"], s["twin"], s["method"]) == (pool, "noisy", method)]

    def mean(method: str, key: str) -> float:
        v = [s[key] for s in cells(method)]
        return float(np.mean(v)) if v else math.nan

    return (f"default_vs_random_nll_gain={mean('default', 'heldout_nll_macro_gain_vs_random_gain'):.4f} "
            f"paper_vs_random_nll_gain={mean('paper', 'heldout_nll_macro_gain_vs_random_gain'):.4f} "
            f"default_noisy_share={mean('default', 'noisy_share_unique_mean'):.3f} "
            f"random_noisy_share={mean('random', 'noisy_share_unique_mean'):.3f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pool", choices=["dev", "test"], default="test")
    p.add_argument("--screen", action="store_true", help="dry runs of the candidates only (no training)")
    p.add_argument("--prepare-only", action="store_true", help="prepare the pool and measure the base model, then stop")
    p.add_argument("--methods", default="default,paper,random", help="comma-separated subset of " + ",".join(METHODS))
    p.add_argument("--twins", default="noisy", help="noisy,clean: the pool as built, and without its noisy rows")
    p.add_argument("--budgets", default="0.025,0.05")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--train-rows", type=int, default=5000)
    p.add_argument("--num-groups", type=int, default=6, help="task groups (6 × 7 arms: cells of ~100 rows)")
    p.add_argument("--work", default=None, help="scratch folder per pool (default /tmp/lead-ray-regime-<pool>)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "quality-regime"))
    p.add_argument("--cache-dir", default="~/.cache/lead-ray")
    p.add_argument("--keep-runs", action="store_true")
    p.add_argument("--resume", action="store_true", help="keep the runs in --out/runs.csv and do only the others")
    args = p.parse_args(argv)
    args.budgets = [float(b) for b in args.budgets.split(",")]
    methods, twins = args.methods.split(","), args.twins.split(",")
    unknown = sorted(set(methods) - set(METHODS)) + sorted(set(twins) - {"noisy", "clean"})
    if unknown:
        p.error(f"unknown method or twin {unknown}")
    work = Path(args.work or f"/tmp/lead-ray-regime-{args.pool}").expanduser().resolve()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    pool, cfg, times = load_pool(args, args.pool, work)
    if args.screen:
        (out / f"screen-{args.pool}").mkdir(exist_ok=True)
        screen(args, pool, cfg, out / f"screen-{args.pool}")
        return 0
    base = base_metrics(args, pool, cfg, work)
    log(f"base model: macro held-out NLL {base['heldout_nll_macro']:.4f}, exact match {base['exact_match']:.3f}, "
        f"probe accuracy {base['probe_accuracy']:.3f} ({base['base_eval_seconds']:.0f}s, once per pool)")
    if args.prepare_only:
        return 0
    rows = read_runs(out / "runs.csv") if args.resume else []
    fill_source_shares(rows, pool, out)
    done = {(r["pool"], r["twin"], r["method"], float(r["budget"]), int(r["seed"])) for r in rows}
    todo = [(tw, m, b, s) for s in range(args.seeds) for b in args.budgets for tw in twins for m in methods
            if (pool.name, tw, m, b, s) not in done]
    log(f"{len(todo)} runs to do ({len(done)} already in runs.csv)")
    for k, (twin, method, budget, seed) in enumerate(todo):
        row = {**train_one(args, pool, cfg, method, twin, budget, seed, out), **times,
               "base_heldout_nll_macro": base["heldout_nll_macro"], "base_eval_seconds": base["base_eval_seconds"]}
        rows.append(row)
        write_csv(rows, out / "runs.csv")
        log(f"run {k + 1}/{len(todo)} {twin} {method} b={budget:g} seed {seed}: macro NLL "
            f"{row['heldout_nll_macro']:.4f}, EM {row['exact_match']:.3f}, noisy share {row['noisy_share_unique']:.3f}, "
            f"train {row['train_seconds']:.0f}s + eval {row['eval_seconds']:.0f}s")
    table = summarise(rows)
    write_csv(table, out / "table.csv")
    plot(table, out / "quality.png")
    with open(out / "command.txt", "a") as f:  # every call that filled runs.csv, in order
        f.write("python bench/quality_regime.py " + " ".join(sys.argv[1:] if argv is None else argv)
                + f"   # {time.time() - t0:.0f}s\n")
    for s in table:
        print(f"{s['pool']}/{s['twin']:<5} {s['method']:<15} {s['budget']:>6.3f} n={s['seeds']} "
              f"macro NLL {s['heldout_nll_macro_mean']:.4f} (gain {s['heldout_nll_macro_gain_vs_random_gain']:+.4f} "
              f"[{s['heldout_nll_macro_gain_vs_random_lo']:+.4f}, {s['heldout_nll_macro_gain_vs_random_hi']:+.4f}]) "
              f"EM {s['exact_match_mean']:.3f} noisy {s['noisy_share_unique_mean']:.3f} KL {s['source_kl_mean']:.3f}")
        print("    by source (share of picks; NLL gain vs random): " + ", ".join(
            f"{k[6:-5]} {s[k]:.2f}" + (f" {s[g]:+.3f}" if (g := f"heldout_nll/{k[6:-5]}_gain_vs_random") in s else "")
            for k in s if k.startswith("share/")))
    print(headline(table, pool.name), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
