#!/usr/bin/env bash
# Set everything up, then run the main job offline on the bundled gpt-oss-tiny model: inspect it,
# ask it questions (the python tool in its sandbox, a plain chat turn), and benchmark it.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
model="$(.venv/bin/python -c 'from gptoss.models import default_model_path; print(default_model_path())')"
.venv/bin/gptoss inspect "$model"
echo "Hello, who are you?" | .venv/bin/gptoss chat --temperature 0
.venv/bin/gptoss generate "What is 4817 * 23?" --python --show-reasoning --temperature 0
.venv/bin/gptoss bench --prompt-tokens 128 --gen-tokens 32 "$@"
