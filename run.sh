#!/usr/bin/env bash
# Set everything up, then run the main job offline: a random gpt-oss checkpoint of the tiny
# preset is written once, inspected, used to generate tokens and benchmarked.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
model="${GPTOSS_DEMO_MODEL:-${XDG_CACHE_HOME:-$HOME/.cache}/gptoss/models/tiny-random}"
[ -d "$model" ] || .venv/bin/gptoss checkpoint random "$model" --preset tiny --seed 0
.venv/bin/gptoss inspect "$model"
.venv/bin/gptoss generate --model "$model" --tokens 200006,1428,200008,13225 --max-tokens 16 --temperature 0 --json
.venv/bin/gptoss bench --model "$model" --prompt-tokens 128 --gen-tokens 16 "$@"
