#!/usr/bin/env bash
# Train the shipped default model models/poppyscan-default on synthetic scenes only (poppyscan.synth).
# Four stages on 2 shared CPU cores: stage 1 from scratch (~50 min), stage 2 fine-tunes it on twice the
# scenes with more negative tiles (~40 min), stage 3 fine-tunes stage 2 with extra coarse-GSD and
# poppy-free scenes, larger tiles and the coarse-GSD augmentation (~60 min), stage 4 fine-tunes stage 3
# with more coarse-GSD and poppy-free scenes and hard negatives mined with stage 3 (~80 min). Re-running
# the script resumes each stage from its last epoch checkpoint (a finished stage is skipped).
#
#   nohup bash scripts/train_default.sh > /tmp/train_default.log 2>&1 &
#
# DATA, RUN1 ... RUN4 can be overridden; all live outside the repository. Held-out test scenes use
# seeds >= 900000 (scripts/eval_default.py); the training/validation seeds are 10000-10815 (stages 1-3)
# and 10900-11239 (stage 4).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-/tmp/poppy_data}
RUN1=${RUN1:-/tmp/poppy_train_default}
RUN2=${RUN2:-/tmp/poppy_train_default2}
RUN3=${RUN3:-/tmp/poppy_train_default3}
RUN4=${RUN4:-/tmp/poppy_train_default4}
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
if [ ! -f "$RUN2/bundle/bundle.json" ]; then
  "$PY" -m poppyscan train "$DATA/stage2_train.csv" --val "$DATA/stage2_val.csv" --init "$RUN1/bundle" \
      --out "$RUN2" $(mode "$RUN2") --config scripts/train_default_stage2.yaml \
      --name poppyscan-default --model-version 0.2.0
fi

# ---- stage 3: + 120 scenes at GSD 4.5-8 cm (30 % poppy-free, seeds 10600-10719) and 60 poppy-free
# scenes at 2-8 cm (seeds 10720-10779); fine-tuned from stage 2, 28 epochs of 320 px tiles with 30 % of
# tiles coarsened (down- then up-sampled, as 6-8 cm mosaics are when detect resamples them to 4 cm).
# Validation: stage 2's 48 validation scenes + 16 new ones (seeds 10800-10815), never trained on.
"$PY" scripts/render_training_set.py "$DATA/train3" --first-seed 10600 --count 120 --poppy-free 0.3 \
    --gsd-min 0.045 --gsd-max 0.08
"$PY" scripts/render_training_set.py "$DATA/train3" --first-seed 10720 --count 60 --poppy-free 1.0
"$PY" scripts/render_training_set.py "$DATA/val3" --first-seed 10800 --count 16 --poppy-free 0.25
"$PY" - "$DATA" <<'PYEOF'
import sys
from pathlib import Path
data = Path(sys.argv[1])
def rows(name): return (data / name).read_text().splitlines()[1:]
new = [f"{d}/mosaic.tif,{d}/truth.gpkg" for d in sorted((data / "train3").glob("scene_*"))]
val = [f"{d}/mosaic.tif,{d}/truth.gpkg" for d in sorted((data / "val3").glob("scene_*"))]
for name, r in (("stage3_train.csv", rows("stage2_train.csv") + new), ("stage3_val.csv", rows("stage2_val.csv") + val)):
    (data / name).write_text("mosaic,labels\n" + "\n".join(r) + "\n")
    print(f"{name}: {len(r)} scenes")
PYEOF
if [ ! -f "$RUN3/bundle/bundle.json" ]; then
  "$PY" -m poppyscan train "$DATA/stage3_train.csv" --val "$DATA/stage3_val.csv" \
      --init "$RUN2/bundle" --out "$RUN3" $(mode "$RUN3") --config scripts/train_default_stage3.yaml \
      --name poppyscan-default --model-version 0.3.0
fi
# ---- stage 4: + 100 scenes at GSD 4.5-8 cm (35 % poppy-free, seeds 10900-10999), 40 poppy-free
# farmland scenes at 2-8 cm (seeds 11000-11039) and 100 poppy-free wild-land scenes at 2-8 cm (meadow,
# shrubs, dead trees: seeds 11040-11099 and 11200-11239); hard negatives mined with the stage-3 model on
# every training scene (its false plots at threshold 0.5, layer mined_negatives, 30 % of the non-positive
# tiles); fine-tuned from stage 3, 20 epochs, wider photometric jitter (color_aug 1.5), 35 % coarsened
# tiles. Validation: stage 3's 64 validation scenes + 16 new ones (seeds 11100-11115) + 8 wild-land ones
# (seeds 11116-11123), never trained or mined on.
"$PY" scripts/render_training_set.py "$DATA/train4" --first-seed 10900 --count 100 --poppy-free 0.35 \
    --gsd-min 0.045 --gsd-max 0.08
"$PY" scripts/render_training_set.py "$DATA/train4" --first-seed 11000 --count 40 --poppy-free 1.0
"$PY" scripts/render_training_set.py "$DATA/train4" --first-seed 11040 --count 60 --poppy-free 1.0 --wild 1.0
"$PY" scripts/render_training_set.py "$DATA/train4" --first-seed 11200 --count 40 --poppy-free 1.0 --wild 1.0
"$PY" scripts/render_training_set.py "$DATA/val4" --first-seed 11100 --count 16 --poppy-free 0.25
"$PY" scripts/render_training_set.py "$DATA/val4" --first-seed 11116 --count 8 --poppy-free 1.0 --wild 1.0
"$PY" - "$DATA" <<'PYEOF'
import sys
from pathlib import Path
data = Path(sys.argv[1])
def rows(name): return (data / name).read_text().splitlines()[1:]
new = [f"{d}/mosaic.tif,{d}/truth.gpkg" for d in sorted((data / "train4").glob("scene_*"))]
val = [f"{d}/mosaic.tif,{d}/truth.gpkg" for d in sorted((data / "val4").glob("scene_*"))]
for name, r in (("stage4_train.csv", rows("stage3_train.csv") + new), ("stage4_val.csv", rows("stage3_val.csv") + val)):
    (data / name).write_text("mosaic,labels\n" + "\n".join(r) + "\n")
    print(f"{name}: {len(r)} scenes")
PYEOF
if [ ! -f "$DATA/stage4_train_mined.csv" ]; then
  "$PY" scripts/mine_hard_negatives.py "$RUN3/bundle" "$DATA/stage4_train.csv" "$DATA/mined4" \
      --out-csv "$DATA/stage4_train_mined.csv" --threshold 0.5 --threads 1
fi
if [ ! -f "$RUN4/bundle/bundle.json" ]; then
  "$PY" -m poppyscan train "$DATA/stage4_train_mined.csv" --val "$DATA/stage4_val.csv" \
      --init "$RUN3/bundle" --out "$RUN4" $(mode "$RUN4") --config scripts/train_default_stage4.yaml \
      --name poppyscan-default --model-version 0.4.0
fi
# ---- ship: the stage-4 bundle becomes the default model (0.4.0; it shipped because the extended held-out
# set showed fewer false plots/ha and no lower F1 than 0.3.0), measured on the held-out scenes (seeds >= 900000)
rm -rf models/poppyscan-default && mkdir -p models/poppyscan-default
cp "$RUN4/bundle/bundle.json" "$RUN4/bundle/model.pt" "$RUN4/bundle/model.onnx" models/poppyscan-default/
"$PY" scripts/eval_default.py models/poppyscan-default --report models/poppyscan-default-eval.json --update-bundle
