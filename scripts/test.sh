#!/usr/bin/env bash
# The test suite: unit, integration (local Ray) and end-to-end, slow tests included. Offline by design.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check --quiet lead_ray tests bench jobs tune  # lint first: a failure stops the suite
echo "ruff check: clean"
# two pytest-xdist workers, a test file each at a time (its module fixtures stay in one process); the tiny run that
# many tests read is made once and shared (tests/conftest.py). LEAD_RAY_TEST_WORKERS=0 runs in this process.
exec .venv/bin/python -m pytest -p no:cacheprovider -q -rs --durations=15 -n "${LEAD_RAY_TEST_WORKERS:-2}" \
    --dist loadfile "$@"
