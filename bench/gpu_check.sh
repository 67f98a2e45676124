#!/usr/bin/env bash
# GPU check, for a CUDA machine. Usage: bash bench/gpu_check.sh [NUM_WORKERS]
# 1. bench/gpu_check.py (torch, transformers and peft only, so a bare CUDA image runs it): the mixed cpu:gloo,cuda:nccl
#    process group with the loop's collectives, and the training step's peak memory, tokens/s and MFU at 1B and 8B
#    shapes with LoRA, gradient checkpointing, the chunked NLL and full fine-tuning.
# 2. Where Ray is installed (scripts/setup.sh): the tiny and demo jobs with use_gpu=true (bf16; NCCL when
#    NUM_WORKERS > 1, default: every GPU), with steps/s and tokens/s, then the GPU preparation stages (vLLM scoring
#    only where vllm is installed: nothing is installed here, since an unpinned vllm would replace the pinned torch).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
[ -x $PY ] && PY=$PY
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
$PY bench/gpu_check.py ${GPU_CHECK_ARGS:-}
if ! $PY -c "import ray" 2>/dev/null; then
  echo "no Ray here: the job checks (step 2) need scripts/setup.sh"; exit 0
fi
WORKERS=${1:-$($PY -c "import torch; print(torch.cuda.device_count())")}
OUT=${OUT:-/tmp/lead-ray-gpu-check}
for cfg in tiny demo; do
  start=$(date +%s)
  $PY jobs/lead.py --config configs/$cfg.yaml --output-dir "$OUT" run_name=gpu_$cfg \
      use_gpu=true bf16=true num_workers=$WORKERS > "$OUT.$cfg.log" 2>&1 || { tail -50 "$OUT.$cfg.log"; exit 1; }
  $PY - "$OUT/gpu_$cfg" "$(( $(date +%s) - start ))" <<'PY'
import json, sys
run, wall = sys.argv[1], int(sys.argv[2])
rounds = [json.loads(line) for line in open(f"{run}/metrics.jsonl") if '"final"' not in line]
final = json.loads(open(f"{run}/summary.json").read())
secs = sum(r["round_seconds"] for r in rounds)
steps = rounds[-1]["step"] if rounds else 0
tokens = sum(r.get("num_tokens", 0) for r in rounds)
print(f"{run.rsplit('/', 1)[1]}: rounds={len(rounds)} steps_per_s={steps / max(secs, 1e-9):.2f} "
      f"tokens_per_s={tokens / max(secs, 1e-9):.0f} nll_before={final['nll_before']:.4f} "
      f"nll_after={final['nll_after']:.4f} job_wall_s={wall}")
PY
done

# Preparation on the GPU: the embedding stage (MiniLM actor pool, num_gpus=1) and the vllm scoring stage
# (pip install vllm on this machine; one engine per GPU), on the demo pool, with rows/s and tokens/s.
$PY - "$OUT/prep_gpu" <<'PY'
import sys, time
from pathlib import Path
import pyarrow.parquet as pq
from lead_ray.config import load_config
from lead_ray.prep.embed import embed_pool
from lead_ray.prep.score import score_pool
from lead_ray.runtime.ray_init import init_ray
from lead_ray.pipeline import prepare_stages

out = Path(sys.argv[1])
cfg = load_config("configs/demo.yaml", {"output_dir": str(out), "use_gpu": True, "max_samples": None,
                                         "ifd_model": "base", "scoring_backend": "hf"})
prepared = prepare_stages(cfg, cfg.run_dir)  # ingest etc.; then time the two stages on their own
pool = prepared.pool_dir
meta = pq.read_table(pool / "pool.parquet", columns=["n_prompt_tokens", "n_response_tokens"])
n = meta.num_rows
tokens = sum(meta.column(c).to_numpy().sum() for c in meta.column_names)
t0 = time.time()
embed_pool(pool, out / "emb_gpu.parquet", model="builtin:minilm", batch_size=256, concurrency=1, num_gpus=1)
e = time.time() - t0
print(f"embed (GPU, MiniLM): {n / e:.0f} rows/s over {n} rows, incl. actor start")
import importlib.util
for backend in ("hf", "vllm") if importlib.util.find_spec("vllm") else ("hf",):
    t0 = time.time()
    score_pool(pool, prepared.sources, modes=("full", "response"), backend=backend, batch_size=512,
               concurrency=1, num_gpus=1)
    s = time.time() - t0
    print(f"score ({backend}, full + response): {n / s:.0f} rows/s, {tokens / s:.0f} tokens/s (full pass) "
          f"over {n} rows, incl. engine start")
PY

# The quality table with the real SmolLM2-135M (LoRA) on a small budget grid; the table lands in
# bench/results/quality-smollm2/ (copy it back and commit it). Skip with QUALITY=0.
if [ "${QUALITY:-1}" = 1 ]; then
  $PY bench/quality.py --model smollm2 --use-gpu --work "$OUT/quality" 2>&1 | grep -v "RayTrainWorker" | tail -30
fi
