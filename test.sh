#!/usr/bin/env bash
# Set everything up (including the transformers reference), lint, and run the test suite.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh test
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check src tests
.venv/bin/python -m pytest "$@"
