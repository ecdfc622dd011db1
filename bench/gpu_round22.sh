#!/usr/bin/env bash
# Second call after bench/gpu_round21.sh on the warm machine (carry .whlT): issue #17 item 4 on the 10,000-frame
# run's own dataset (/tmp/e2e/store, left by round 21's `avatar bench --frames 10000`): do 90k or 120k images keep
# the held-out PSNR of the budget rule's 150k (32.8 dB goal)? Each variant's learning rates decay over its own budget.
set -u
source bench/device_env.sh
nvidia-smi --query-gpu=name --format=csv,noheader
ds=$(ls -d /tmp/e2e/store/actors/*/dataset 2>/dev/null | head -1)
if [ -z "$ds" ]; then echo "no 10k dataset under /tmp/e2e/store: run bench/gpu_round21.sh first on this machine"; exit 0; fi
timeout 560 python3 bench/gpu_quality.py "$ds" --seeds 0 --timeout 180 \
  --variants '{"img150k": {}, "img90k": {"steps": 5625}, "img120k": {"steps": 7500}}' 2>&1 | grep "^{" \
  | tee $OUT/budget.jsonl | cut -c1-600 | tail -4
