#!/usr/bin/env bash
# The test suite: unit, integration (local Ray) and end-to-end, slow tests included. Offline by design.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check --quiet lead_ray tests bench jobs tune  # lint first: a failure stops the suite
echo "ruff check: clean"
exec .venv/bin/python -m pytest -p no:cacheprovider -q -rs --durations=15 "$@"
