#!/usr/bin/env bash
# Set everything up and run the main job on sample_tiles/: poppyscan detect -> runs/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/poppyscan detect sample_tiles/*/mosaic.tif --out runs/demo --overwrite "$@"
echo "Results in runs/demo/ (plots.gpkg, probability.tif, run.json, tasks.*)"
