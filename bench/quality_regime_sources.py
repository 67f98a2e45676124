"""Where a method's macro NLL moves, for one source: is it how many clean rows of that source were trained, and who
decided that number, the bandit or chance?

Reads the training runs already in runs.csv with their kept selections, and the pool prepared by
bench/quality_regime.py in --work (no Ray, no training). Prints, for --source:

1. each training run: the clean rows of the source it selected and the source's held-out NLL, then the rank
   correlation and the least-squares slope (nats per clean row) over all runs;
2. dry runs of the selector (lead_ray/select/screen.py: no training, so the bandit's rewards stay at zero and its
   arms uniform): the clean rows of the source each method picks over --seeds seeds, against the pool's fair share.
   A training run that picks fewer than its dry runs do was steered there by the bandit's rewards.

    python bench/quality_regime_sources.py --pool test --source unicode_name
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality_regime as regime  # noqa: E402
from quality import read_runs  # noqa: E402


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Rank correlation (average ranks for ties)."""
    def ranks(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=np.float64)
        for value in np.unique(v):  # ties share their mean rank
            r[v == value] = r[v == value].mean()
        return r

    return float(np.corrcoef(ranks(np.asarray(x, float)), ranks(np.asarray(y, float)))[0, 1])


def clean_rows_of(ids: np.ndarray, source: np.ndarray, noisy: np.ndarray, name: str) -> int:
    unique = np.unique(ids)
    return int(((source[unique] == name) & ~noisy[unique]).sum())


def main(argv: list[str] | None = None) -> int:
    from lead_ray.select.screen import decaying_loss, dry_run
    from lead_ray.select.strategies import build_selector

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pool", choices=["dev", "test"], default="test")
    p.add_argument("--source", default="unicode_name")
    p.add_argument("--methods", default="default,random,paper")
    p.add_argument("--budgets", default="0.025,0.05")
    p.add_argument("--seeds", type=int, default=8, help="dry-run seeds per method and budget")
    p.add_argument("--work", default=None, help="the pool's scratch folder (default /tmp/lead-ray-regime-<pool>)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "quality-regime"))
    args = p.parse_args(argv)
    work = Path(args.work or f"/tmp/lead-ray-regime-{args.pool}").expanduser()
    prepared = work / "prepared"
    if not (prepared / "prep" / "enriched.parquet").exists():
        p.error(f"no prepared pool in {prepared}: run `python bench/quality_regime.py --pool {args.pool} "
                "--prepare-only` first")
    cols, noisy = regime.prepared_columns(prepared / "prep" / "enriched.parquet", prepared / "pool", work / "data")
    pool = regime.Pool(args.pool, None, cols, noisy, work / "data")
    source, out = cols["source"].astype(str), Path(args.out)
    unknown = sorted(set(args.methods.split(",")) - set(regime.METHODS))
    if unknown:
        p.error(f"--methods {unknown}: expected some of {sorted(regime.METHODS)}")
    if args.source not in set(source):
        p.error(f"--source {args.source!r}: the pool's sources are {sorted(set(source))}")

    runs = [r for r in read_runs(out / "runs.csv") if r["pool"] == args.pool and r["twin"] == "noisy"]
    print(f"1. training runs ({len(runs)}): clean {args.source} rows selected -> its held-out NLL")
    x, y = [], []
    for r in runs:
        x.append(clean_rows_of(regime.selected_ids(out, r), source, noisy, args.source))
        y.append(float(r[f"heldout_nll/{args.source}"]))
        print(f"   {r['method']:<26} {float(r['budget']):.3f} seed {int(r['seed'])}: {x[-1]:>3} rows, NLL {y[-1]:.3f}")
    if len(x) >= 3:
        slope = np.polyfit(x, y, 1)[0]
        print(f"   rank correlation {spearman(np.array(x), np.array(y)):+.2f}, slope {slope:+.4f} nats per clean row "
              f"(over {len(x)} runs)")

    # the training runs' recipe (the task groups are the prepared pool's)
    cfg = regime.base_config(argparse.Namespace(cache_dir="~/.cache/lead-ray", num_groups=int(cols["group"].max()) + 1),
                             work)
    print(f"2. dry runs ({args.seeds} seeds; arms uniform, as no training moves the bandit): clean {args.source} rows")
    for method in args.methods.split(","):
        overrides = regime.METHODS[method]
        v = pool.variant("noisy", overrides.get("group_by", "embedding"), overrides.get("arm_by", "ifd"))
        selectable = v["arm"] >= 0
        for budget in (float(b) for b in args.budgets.split(",")):
            b = regime.budget_of(v, budget)
            fair = b * ((source == args.source) & ~noisy & selectable).sum() / selectable.sum()
            picked = [clean_rows_of(dry_run(build_selector(v, regime.selection_params(cfg, overrides, b, seed)),
                                            decaying_loss(v["iu0"])).selections()["id"].astype(np.int64),
                                    source, noisy, args.source) for seed in range(args.seeds)]
            print(f"   {method:<26} {budget:.3f}: mean {np.mean(picked):5.1f} (fair {fair:5.1f}); by seed {picked}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
