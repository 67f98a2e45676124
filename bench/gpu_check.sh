#!/usr/bin/env bash
# GPU check, for a CUDA machine: the tiny and demo configs with use_gpu=true (bf16; NCCL when num_workers > 1),
# printing steps/s and tokens/s of the training rounds. Usage: bash bench/gpu_check.sh [NUM_WORKERS]
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS=${1:-1}
[ -x .venv/bin/python ] || bash scripts/setup.sh
export HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled
.venv/bin/python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('GPU:', torch.cuda.get_device_name(0), 'torch', torch.__version__)"
OUT=${OUT:-/tmp/lead-ray-gpu-check}
for cfg in tiny demo; do
  start=$(date +%s)
  .venv/bin/python jobs/lead.py --config configs/$cfg.yaml --output-dir "$OUT" run_name=gpu_$cfg \
      use_gpu=true bf16=true num_workers=$WORKERS > "$OUT.$cfg.log" 2>&1 || { tail -50 "$OUT.$cfg.log"; exit 1; }
  .venv/bin/python - "$OUT/gpu_$cfg" "$(( $(date +%s) - start ))" <<'PY'
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
