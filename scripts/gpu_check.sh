#!/usr/bin/env bash
# The checks that need a CUDA GPU, as one short script for a session that is lent one (~3-5 min):
# the CUDA path equals the CPU path (tests/test_cuda.py), bare GPU throughput, detect end to end on CUDA.
#
#   bash scripts/gpu_check.sh 2>&1 | tee gpu_check.log
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh > /dev/null
nvidia-smi -L || { echo "gpu_check: no NVIDIA GPU visible" >&2; exit 1; }
PY=.venv/bin/python
"$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA GPU'; print(torch.cuda.get_device_name(0))"
"$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py -rs
for b in 8 32; do "$PY" scripts/bench_model.py models/poppyscan-default --device cuda --batch "$b" --repeat 20; done
"$PY" scripts/bench_detect.py --device cuda --big-rows 0 --repeat 1 --workdir "${TMPDIR:-/tmp}/poppyscan-bench-gpu"
