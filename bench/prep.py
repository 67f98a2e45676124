"""Preparation at scale: rows/s per stage, peak driver memory at two pool sizes, Ray Data overhead, faiss k-means.

    python bench/prep.py                       # 100k and 1M rows (about 15 minutes on 2 cores)
    python bench/prep.py --sizes 20000 --score-rows 500 --kmeans-rows 50000   # a quick look

Each pool size runs in its own child process on its own local Ray instance, so its peak RSS (`ru_maxrss`) is the
driver's peak for that size alone; if streaming works, it barely moves between 100k and 1M rows.

- The pool is synthetic: 24 task families of instructions with random fills, written straight into the
  ingested format (`pool.parquet` with `messages`), in chunks. Ingest itself (chat-template rendering) is timed
  on `--score-rows` rows of the bundled demo pool instead, as it is the same per-row work at any size.
- embed: `embed_pool` (Ray Data actor pool) with a cheap sentence embedder built from a config (a 1-layer,
  384-d BERT with MiniLM's tokenizer, random weights) so 1M rows fit the time; the default MiniLM is timed on a
  slice for reference.
- Ray Data efficiency: the pipeline's steady-state embedding rows/s (first batch back to last, i.e. without the
  one-off actor start, which is printed separately) over a bare loop (the same `Embedder` called in the driver on
  blocks of the same size, model already loaded) on the same `--efficiency-rows` rows, alternated twice in one
  child; best over best.
- groups: seeded sample → faiss spherical k-means (K = 64) → assignment in Ray Data `map_batches`.
- score: `score_pool` with `builtin:tiny` (hf backend) on the first `--score-rows` rows (a full-pool pass of a
  real model on 1M rows is GPU work; see bench/gpu_check.sh).
- faiss k-means of `--kmeans-rows` x 384 into 1024 clusters, every point used, in its own child process.

Memory is also sampled by kind (`MemoryPeaks`): ru_maxrss counts the object-store pages the driver mapped while
streaming (RssShmem, bounded by the store's size); the driver's private heap (RssAnon) is printed per stage.

The last line is `rows_per_s=<embed rows/s at the largest size> ray_data_efficiency=<ratio> peak_rss_gb=<g>
peak_private_gb=<g>`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

FAMILIES = [
    "What is {a} plus {b}?", "Compute {a} times {b}.", "Subtract {b} from {a}.", "Is {a} a prime number?",
    "Translate '{w}' into French.", "Give a synonym for '{w}'.", "Spell '{w}' backwards.", "Define the word '{w}'.",
    "Write a Python function that returns {a} squared.", "Explain Python's {w} module.",
    "Fix the bug in: print({a} / 0)", "What does list.{w}() do in Python?", "Summarise the history of {w}.",
    "Write a haiku about {w}.", "Tell a short story about a {w}.", "Describe the colour of a {w}.",
    "Convert {a} degrees Celsius to Fahrenheit.", "How many seconds are in {a} minutes?",
    "Sort these numbers: {a}, {b}, {c}.", "What is the capital of country number {a}?",
    "Name {a} animals that live in the {w}.", "Recommend a book about {w}.", "Explain recursion with {w}.",
    "Write a SQL query counting rows where id = {a}.",
]
WORDS = ["river", "forest", "lambda", "garbage", "itertools", "ocean", "planet", "violin", "castle", "dragon",
         "append", "extend", "mountain", "desert", "pickle", "json", "cloud", "window", "bridge", "lantern"]


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


class MemoryPeaks(threading.Thread):
    """Peaks of this process's memory by kind, sampled from /proc/self/status every 0.1 s.

    ru_maxrss (VmRSS's peak) also counts the pages of Ray's shared-memory object store that the driver has mapped
    while reading blocks (RssShmem); that grows with how much of the store the stream has passed through, up to
    the store's size, and is not the driver's own. RssAnon is the driver's private heap: the number that must not
    grow with the pool."""

    FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem", "Arrow")  # Arrow: pyarrow's allocated buffers

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = dict.fromkeys(self.FIELDS, 0.0)
        self.lock = threading.Lock()
        self.start()

    def sample(self) -> None:
        now = {}
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in self.FIELDS:
                now[key] = int(value.split()[0]) / 2**20  # kB → GB
        now["Arrow"] = pa.total_allocated_bytes() / 2**30
        with self.lock:
            for k, v in now.items():
                self.peak[k] = max(self.peak[k], v)

    def run(self) -> None:
        while True:
            self.sample()
            time.sleep(0.1)

    def take(self) -> dict[str, float]:
        """The peaks since the last call (one stage), then start afresh."""
        self.sample()
        with self.lock:
            out, self.peak = dict(self.peak), dict.fromkeys(self.FIELDS, 0.0)
        return out


def write_pool(pool_dir: Path, n: int, seed: int = 0, chunk: int = 100_000) -> None:
    """A synthetic ingested pool (`id, source, split, messages, ...`), written in chunks."""
    rng = np.random.default_rng(seed)
    pool_dir.mkdir(parents=True, exist_ok=True)
    writer = None
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        fam = rng.integers(0, len(FAMILIES), m)
        a, b, c = rng.integers(1, 1000, (3, m))
        w = rng.integers(0, len(WORDS), m)
        msgs = [json.dumps([{"role": "user", "content": FAMILIES[f].format(a=x, b=y, c=z, w=WORDS[v])},
                            {"role": "assistant", "content": "ok"}])
                for f, x, y, z, v in zip(fam, a, b, c, w)]
        table = pa.table({"id": np.arange(start, start + m, dtype=np.int64), "source": [f"family{f}" for f in fam],
                          "split": ["train"] * m, "messages": msgs})
        writer = writer or pq.ParquetWriter(pool_dir / "pool.parquet", table.schema)
        writer.write_table(table)
    writer.close()


def cheap_embedder(out: Path) -> str:
    """A sentence-transformers folder: a 1-layer 384-d BERT (random weights) + mean pooling, MiniLM's tokenizer."""
    if (out / "modules.json").exists():
        return str(out)
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    from lead_ray.prep.embed import embedding_model_path

    tok = AutoTokenizer.from_pretrained(embedding_model_path("builtin:minilm"), trust_remote_code=False)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=384, num_hidden_layers=1, num_attention_heads=4,
                     intermediate_size=768, max_position_embeddings=128)
    (out / "hf").mkdir(parents=True, exist_ok=True)
    BertModel(cfg).save_pretrained(out / "hf", safe_serialization=True)
    tok.save_pretrained(out / "hf")
    word = models.Transformer(str(out / "hf"), max_seq_length=64)
    SentenceTransformer(modules=[word, models.Pooling(384, "mean")], device="cpu").save(str(out))
    return str(out)


def bare_embedding_rate(pool_dir: Path, model: str, batch_size: int, rows: int) -> float:
    """The same Embedder, called in this process on blocks of the pipeline's size: the no-Ray baseline."""
    from lead_ray.prep.embed import Embedder, rows_per_block

    table = pq.read_table(pool_dir / "pool.parquet", columns=["id", "messages"]).slice(0, rows)
    emb = Embedder(model, batch_size)
    block = rows_per_block(batch_size)
    batches = [{"id": table.column("id").to_numpy()[s : s + block],
                "messages": np.array(table.column("messages").to_pylist()[s : s + block], dtype=object)}
               for s in range(0, table.num_rows, block)]
    emb(batches[0])  # warm
    t0 = time.perf_counter()
    for b in batches:
        emb(b)
    return table.num_rows / (time.perf_counter() - t0)


def child(n: int, work: Path, args: argparse.Namespace) -> dict:
    import ray

    from lead_ray.config import LeadConfig
    from lead_ray.prep.cluster import assign_clusters, sample_embeddings, spherical_kmeans
    from lead_ray.prep.embed import embed_pool
    from lead_ray.runtime.ray_init import init_ray

    out: dict = {"rows": n}
    pool = work / f"pool{n}"
    write_pool(pool, n)
    model = str(work / "cheap_embedder")  # built by the parent's "embedder" child, outside this RSS
    mem = MemoryPeaks()
    init_ray(LeadConfig.from_flat(num_cpus=4))
    out["rss_after_setup_gb"] = rss_gb()
    out["mem_setup"] = mem.take()

    t0 = time.perf_counter()
    embed_pool(pool, work / f"emb{n}.parquet", model=model, batch_size=args.batch_size, concurrency=1)
    out["embed_rows_per_s"] = n / (time.perf_counter() - t0)
    out["mem_embed"] = mem.take()

    t0 = time.perf_counter()
    sample = sample_embeddings(work / f"emb{n}.parquet", 100_000, seed=0)
    centroids = spherical_kmeans(sample, 64, seed=0)
    t1 = time.perf_counter()
    assign_clusters(work / f"emb{n}.parquet", centroids, n)
    out["groups_kmeans_s"] = t1 - t0
    out["groups_assign_rows_per_s"] = n / (time.perf_counter() - t1)
    out["peak_rss_gb"] = rss_gb()  # before the bare loop below, which holds its (fixed-size) slice in memory
    out["mem_groups"] = mem.take()
    out["peak_private_gb"] = max(out[f"mem_{s}"]["RssAnon"] for s in ("setup", "embed", "groups"))

    ray.shutdown()
    return out


def efficiency(work: Path, rows: int, batch_size: int, repeats: int = 2) -> dict:
    """Ray Data pipeline vs bare loop on the same rows, alternated `repeats` times; the best of each is kept, as
    these 2-core machines are noisy and a single pair has come out anywhere from 0.78 to 1.07."""
    import ray

    from lead_ray.config import LeadConfig
    from lead_ray.prep.embed import embed_pool
    from lead_ray.runtime.ray_init import init_ray

    model = str(work / "cheap_embedder")
    write_pool(work / "pool_eff", rows)
    init_ray(LeadConfig.from_flat(num_cpus=4))
    bare, steady, end_to_end = [], [], []
    for _ in range(repeats):
        bare.append(bare_embedding_rate(work / "pool_eff", model, batch_size, rows))
        stats = embed_pool(work / "pool_eff", work / "emb_eff.parquet", model=model, batch_size=batch_size,
                           concurrency=1)
        steady.append(stats["steady_rows_per_s"])
        end_to_end.append(rows / stats["seconds"])
    ray.shutdown()
    return {"bare": bare, "pipeline": steady, "end_to_end": end_to_end,
            "ray_data_efficiency": max(steady) / max(bare)}


def minilm_rate(work: Path, rows: int) -> float:
    import ray

    from lead_ray.config import LeadConfig
    from lead_ray.prep.embed import embed_pool
    from lead_ray.runtime.ray_init import init_ray

    write_pool(work / "pool_minilm", rows, seed=1)
    init_ray(LeadConfig.from_flat(num_cpus=4))
    t0 = time.perf_counter()
    embed_pool(work / "pool_minilm", work / "emb_minilm.parquet", model="builtin:minilm", batch_size=64,
               concurrency=1)
    rate = rows / (time.perf_counter() - t0)
    ray.shutdown()
    return rate


def ingest_and_score(work: Path, rows: int) -> dict:
    """Ingest `rows` bundled demo rows with the tiny model's tokenizer, then score them with it (hf)."""
    import ray

    from lead_ray.config import DEMO_DATA, LeadConfig
    from lead_ray.data.pool import discover_files, ingest
    from lead_ray.data.prepared import PoolSources
    from lead_ray.models.load import resolve_model_path
    from lead_ray.prep.score import score_pool
    from lead_ray.runtime.ray_init import init_ray

    model = resolve_model_path("builtin:tiny", Path("~/.cache/lead-ray").expanduser())
    init_ray(LeadConfig.from_flat(num_cpus=4))
    t0 = time.perf_counter()
    s = ingest(discover_files([str(DEMO_DATA)]), model, work / "ingested", max_length=256, eval_fraction=0.0,
               max_samples=rows)
    out = {"ingest_rows_per_s": s.read / (time.perf_counter() - t0)}
    t0 = time.perf_counter()
    score_pool(work / "ingested", PoolSources(str(work / "ingested"), model, ""), modes=("full", "response"),
               batch_size=64, concurrency=1)
    out["score_rows_per_s"] = s.kept / (time.perf_counter() - t0)
    ray.shutdown()
    return out


def write_raw(path: Path, n: int, seed: int = 0, chunk: int = 100_000) -> None:
    """`n` raw JSONL rows (instruction/output, random fills: few repeats), written in chunks."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            fam, w = rng.integers(0, len(FAMILIES), m), rng.integers(0, len(WORDS), m)
            a, b, c = rng.integers(1, 100_000, (3, m))
            f.write("".join(json.dumps({"instruction": FAMILIES[i].format(a=x, b=y, c=z, w=WORDS[v]),
                                        "output": f"Answer {x + y} about {WORDS[v]}."}) + "\n"
                            for i, x, y, z, v in zip(fam, a, b, c, w)))


def ingest_scale(work: Path, n: int, workers: int) -> dict:
    """Ingest of `n` raw rows with SmolLM2's tokenizer on `workers` tokenizer actors: rows/s, the driver's CPU share
    (its process CPU seconds over wall seconds) and its memory; the baseline is `Tokenize.row` called in a bare loop
    in this process on the first 2,000 rows (one core, no Ray)."""
    import ray

    from lead_ray.config import LeadConfig
    from lead_ray.data.pool import Tokenize, ingest
    from lead_ray.models.load import resolve_model_path
    from lead_ray.runtime.ray_init import init_ray

    raw = work / f"raw{n}.jsonl"
    write_raw(raw, n)
    model = resolve_model_path("builtin:smollm2", Path("~/.cache/lead-ray").expanduser())
    tok = Tokenize(model, 256)
    with open(raw) as f:
        lines = [next(f) for _ in range(min(n, 2000))]
    t0 = time.perf_counter()
    for i, line in enumerate(lines):
        tok.row(str(raw), i + 1, line, "")
    bare = len(lines) / (time.perf_counter() - t0)
    del tok
    init_ray(LeadConfig.from_flat(num_cpus=workers + 1))
    mem = MemoryPeaks()
    mem.take()
    cpu0, t0 = time.process_time(), time.perf_counter()
    s = ingest([str(raw)], model, work / f"ingested{n}", max_length=256, eval_fraction=0.0, concurrency=workers)
    wall = time.perf_counter() - t0
    out = {"rows": n, "read": s.read, "kept": s.kept, "quarantined": s.quarantined, "wall_s": wall,
           "rows_per_s": s.read / wall, "bare_rows_per_s": bare, "driver_cpu_share": (time.process_time() - cpu0) / wall,
           "mem": mem.take(), "workers": workers}
    ray.shutdown()
    return out


def kmeans_time(rows: int) -> float:
    from lead_ray.prep.cluster import spherical_kmeans

    x = np.random.default_rng(0).standard_normal((rows, 384), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    t0 = time.perf_counter()
    spherical_kmeans(x, 1024, seed=0, niter=10)
    return time.perf_counter() - t0


def run_child(*argv: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child {argv} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ingest_at_scale(sizes: list[int], workers: int, common: list[str]) -> str:
    """Ingest at each size in its own child; returns the summary line."""
    runs = []
    for n in sizes:
        r = run_child("--child", f"ingest_scale:{n}", *common)
        runs.append(r)
        m = r["mem"]
        print(f"[bench] ingest {n:,} raw rows on {workers} tokenizer actors: {r['rows_per_s']:.0f} rows/s "
              f"({r['rows_per_s'] / workers:.0f} per actor; a bare loop of Tokenize.row: {r['bare_rows_per_s']:.0f} "
              f"rows/s on one core), {r['wall_s']:.0f} s; read {r['read']:,} = kept {r['kept']:,} + quarantined "
              f"{r['quarantined']:,}; driver CPU {r['driver_cpu_share']:.1%} of wall time; driver peak private "
              f"(RssAnon) {m['RssAnon']:.2f} GB (Arrow buffers {m['Arrow']:.2f} GB), total {m['VmRSS']:.2f} GB",
              flush=True)
    first, last = runs[0], runs[-1]
    return (f"ingest_rows_per_s_per_core={last['rows_per_s'] / workers:.0f} "
            f"driver_cpu_share={max(r['driver_cpu_share'] for r in runs):.3f} "
            f"driver_private_gb_ratio={last['mem']['RssAnon'] / first['mem']['RssAnon']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000", help="comma-separated pool sizes")
    ap.add_argument("--batch-size", type=int, default=128, help="embedding batch size (pipeline and bare loop)")
    ap.add_argument("--efficiency-rows", type=int, default=50_000, help="rows for the pipeline/bare comparison")
    ap.add_argument("--score-rows", type=int, default=2000, help="rows for the ingest and scoring stages")
    ap.add_argument("--minilm-rows", type=int, default=5000, help="rows embedded with the default MiniLM")
    ap.add_argument("--kmeans-rows", type=int, default=1_000_000, help="rows for the 1024-cluster k-means")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--ingest-sizes", default="100000,1000000", help="raw rows for the ingest-at-scale part")
    ap.add_argument("--ingest-workers", type=int, default=2, help="tokenizer actors (preprocessing_num_workers)")
    ap.add_argument("--ingest-only", action="store_true", help="only the ingest-at-scale part")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="lead-ray-bench-prep-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.child:
        kind, _, value = args.child.partition(":")
        result = {"size": lambda: child(int(value), work, args), "minilm": lambda: {"rate": minilm_rate(
            work, int(value))}, "ingest": lambda: ingest_and_score(work, int(value)),
                  "efficiency": lambda: efficiency(work, int(value), args.batch_size),
                  "kmeans": lambda: {"seconds": kmeans_time(int(value))},
                  "ingest_scale": lambda: ingest_scale(work, int(value), args.ingest_workers),
                  "embedder": lambda: {"path": cheap_embedder(work / "cheap_embedder")}}[kind]()
        print(json.dumps(result), flush=True)
        return

    common = ["--work", str(work), "--batch-size", str(args.batch_size), "--efficiency-rows",
              str(args.efficiency_rows), "--ingest-workers", str(args.ingest_workers)]
    ingest_line = ingest_at_scale([int(s) for s in args.ingest_sizes.split(",")], args.ingest_workers, common)
    if args.ingest_only:
        print(ingest_line)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    run_child("--child", "embedder:0", *common)
    results = []
    for n in sizes:
        print(f"[bench] pool of {n} rows ...", flush=True)
        r = run_child("--child", f"size:{n}", *common)
        results.append(r)
        print(f"[bench]   embed {r['embed_rows_per_s']:.0f} rows/s (cheap 384-d embedder), groups: k-means "
              f"{r['groups_kmeans_s']:.1f}s + assign {r['groups_assign_rows_per_s']:.0f} rows/s; peak driver RSS "
              f"{r['peak_rss_gb']:.2f} GB", flush=True)
        for stage in ("setup", "embed", "groups"):
            m = r[f"mem_{stage}"]
            print(f"[bench]   {stage:<6} peak GB: private (RssAnon) {m['RssAnon']:.2f}, object-store pages "
                  f"(RssShmem) {m['RssShmem']:.2f}, files {m['RssFile']:.2f}, total {m['VmRSS']:.2f}", flush=True)
    eff = run_child("--child", f"efficiency:{args.efficiency_rows}", *common)
    print(f"[bench] Ray Data efficiency on {args.efficiency_rows} rows: pipeline steady rows/s "
          f"{', '.join(f'{v:.0f}' for v in eff['pipeline'])} (with actor start "
          f"{', '.join(f'{v:.0f}' for v in eff['end_to_end'])}) vs bare loop "
          f"{', '.join(f'{v:.0f}' for v in eff['bare'])}; best over best = {eff['ray_data_efficiency']:.3f}",
          flush=True)
    ing = run_child("--child", f"ingest:{args.score_rows}", *common)
    print(f"[bench] ingest {ing['ingest_rows_per_s']:.0f} rows/s, score (builtin:tiny, hf, full + response) "
          f"{ing['score_rows_per_s']:.0f} rows/s on {args.score_rows} demo rows", flush=True)
    mini = run_child("--child", f"minilm:{args.minilm_rows}", *common)
    print(f"[bench] embed with the default all-MiniLM-L6-v2: {mini['rate']:.0f} rows/s ({args.minilm_rows} rows)",
          flush=True)
    km = run_child("--child", f"kmeans:{args.kmeans_rows}", *common)
    print(f"[bench] faiss spherical k-means {args.kmeans_rows} x 384 into 1024 clusters (10 iterations): "
          f"{km['seconds']:.1f}s", flush=True)
    if len(results) > 1:
        print(f"[bench] peak driver RSS {results[-1]['peak_rss_gb']:.2f} GB at {sizes[-1]} rows vs "
              f"{results[0]['peak_rss_gb']:.2f} GB at {sizes[0]} rows "
              f"(ratio {results[-1]['peak_rss_gb'] / results[0]['peak_rss_gb']:.2f} for "
              f"{sizes[-1] / sizes[0]:.0f}x the rows); private (RssAnon) {results[-1]['peak_private_gb']:.2f} GB "
              f"vs {results[0]['peak_private_gb']:.2f} GB (ratio "
              f"{results[-1]['peak_private_gb'] / results[0]['peak_private_gb']:.2f})", flush=True)
    last = results[-1]
    print(f"[bench] {ingest_line}", flush=True)
    print(f"rows_per_s={last['embed_rows_per_s']:.0f} ray_data_efficiency={eff['ray_data_efficiency']:.3f} "
          f"peak_rss_gb={last['peak_rss_gb']:.2f} peak_private_gb={last['peak_private_gb']:.2f}", flush=True)


if __name__ == "__main__":
    main()
