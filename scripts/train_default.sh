#!/usr/bin/env bash
# Train the shipped default model models/poppyscan-default on synthetic scenes only (poppyscan.synth).
# About 60-90 min on 2 shared CPU cores. Re-running the script resumes from the last epoch checkpoint.
#
#   nohup bash scripts/train_default.sh > /tmp/train_default.log 2>&1 &
#
# DATA and RUN can be overridden; both live outside the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-/tmp/poppy_data}
RUN=${RUN:-/tmp/poppy_train_default}
PY=${PY:-.venv/bin/python}

# 240 training scenes, seeds 10000-10239 (held-out test scenes use seeds >= 900000, see eval_default.py)
"$PY" scripts/render_training_set.py "$DATA/train" --first-seed 10000 --count 240 --poppy-free 0.2

if [ -f "$RUN/checkpoints/last.pt" ]; then MODE=--resume; else MODE=--overwrite; fi
"$PY" -m poppyscan train "$DATA/train" --out "$RUN" $MODE --config scripts/train_default.yaml \
    --bundle-out models/poppyscan-default --name poppyscan-default --model-version 0.1.0
