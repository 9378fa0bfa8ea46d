#!/usr/bin/env bash
# Train the shipped default model models/poppyscan-default on synthetic scenes only (poppyscan.synth).
# Two stages on 2 shared CPU cores: stage 1 from scratch (~50 min), stage 2 fine-tunes it on twice the
# scenes with more negative tiles (~40 min). Re-running the script resumes each stage from its last
# epoch checkpoint (a finished stage is skipped).
#
#   nohup bash scripts/train_default.sh > /tmp/train_default.log 2>&1 &
#
# DATA, RUN1 and RUN2 can be overridden; all live outside the repository. Held-out test scenes use
# seeds >= 900000 (scripts/eval_default.py); the training/validation seeds are 10000-10503.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-/tmp/poppy_data}
RUN1=${RUN1:-/tmp/poppy_train_default}
RUN2=${RUN2:-/tmp/poppy_train_default2}
PY=${PY:-.venv/bin/python}

mode() { if [ -f "$1/checkpoints/last.pt" ]; then echo --resume; else echo --overwrite; fi; }

# ---- stage 1: 240 scenes (seeds 10000-10239), from scratch, 24 epochs; 10 % of scenes validate
"$PY" scripts/render_training_set.py "$DATA/train" --first-seed 10000 --count 240 --poppy-free 0.2
if [ ! -f "$RUN1/bundle/bundle.json" ]; then
  "$PY" -m poppyscan train "$DATA/train" --out "$RUN1" $(mode "$RUN1") --config scripts/train_default.yaml \
      --name poppyscan-default --model-version 0.1.0
fi

# ---- stage 2: + 240 scenes (seeds 10240-10479), fine-tuned from stage 1, 20 epochs.
# Validation: stage 1's validation scenes + 24 new ones (seeds 10480-10503), never trained on.
"$PY" scripts/render_training_set.py "$DATA/train2" --first-seed 10240 --count 240 --poppy-free 0.25
"$PY" scripts/render_training_set.py "$DATA/val2" --first-seed 10480 --count 24 --poppy-free 0.25
"$PY" - "$RUN1/bundle/bundle.json" "$DATA" <<'PYEOF'
import json, sys
from pathlib import Path
meta, data = json.load(open(sys.argv[1])), Path(sys.argv[2])
val1 = {str(Path(p).parent) for p in meta["training"]["scenes_val"]}
train = [d for sub in ("train", "train2") for d in sorted((data / sub).glob("scene_*")) if str(d) not in val1]
val = sorted(val1) + [str(d) for d in sorted((data / "val2").glob("scene_*"))]
for name, dirs in (("stage2_train.csv", train), ("stage2_val.csv", val)):
    rows = [f"{d}/mosaic.tif,{d}/truth.gpkg" for d in dirs]
    (data / name).write_text("mosaic,labels\n" + "\n".join(rows) + "\n")
print(f"stage 2: {len(train)} training scenes, {len(val)} validation scenes")
PYEOF
"$PY" -m poppyscan train "$DATA/stage2_train.csv" --val "$DATA/stage2_val.csv" --init "$RUN1/bundle" \
    --out "$RUN2" $(mode "$RUN2") --config scripts/train_default_stage2.yaml \
    --bundle-out models/poppyscan-default --name poppyscan-default --model-version 0.2.0
# then: python scripts/eval_default.py models/poppyscan-default --report models/poppyscan-default-eval.json --update-bundle
