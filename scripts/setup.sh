#!/usr/bin/env bash
# Idempotent set-up: Debian packages, a virtual environment in .venv, and the package.
#   scripts/setup.sh          runtime only
#   scripts/setup.sh test     runtime + test tools (transformers reference, pytest, ruff)
# Re-running is cheap: installs are skipped while pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"

# Debian packages the project needs: bubblewrap sandboxes the python tool. Installed only when
# missing, and only where apt can be used.
APT_PACKAGES=(bubblewrap)
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq "${missing[@]}"
  else
    echo "setup: please install Debian packages: ${missing[*]}" >&2; exit 1
  fi
fi

PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup: Python >= 3.11 is required (found $("$PY" --version 2>&1))" >&2; exit 1
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv

stamp=".venv/.gptoss-installed${extra:+-$extra}"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first and pinned: the local CPU wheel, never a multi-GB CUDA build.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".${extra:+[$extra]}"
  echo "$want" > "$stamp"
fi
