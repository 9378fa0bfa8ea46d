#!/usr/bin/env bash
# Create .venv (if missing) and install poppyscan with its dev tools. Idempotent: a second run is quick.
# torch/torchvision are pinned to the builds this project is tested with; pip takes them from the
# local wheel mirror where the machine has one, else from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.poppyscan-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
  .venv/bin/python -m pip install -q -e ".[dev]"
  touch "$stamp"
fi
# Headless Chromium for the review page's browser test: Debian's package, only where it is missing and
# apt-get can run (root); elsewhere that one test skips with its reason.
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
    >/dev/null 2>&1 || echo "setup: could not install chromium; the browser test will be skipped" >&2
fi
# A CJK font so `poppyscan stats` charts can draw Chinese unit names (WenQuanYi Micro Hei, ~5 MB), on the
# same terms; without one the charts still render, with the Chinese labels left out.
if command -v fc-list >/dev/null 2>&1 && ! fc-list :lang=zh 2>/dev/null | grep -q . \
    && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      fonts-wqy-microhei; } >/dev/null 2>&1 || echo "setup: could not install a CJK font (fonts-wqy-microhei)" >&2
fi
