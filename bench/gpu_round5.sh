#!/usr/bin/env bash
# One device call: the default preset end to end (wojtek.mp4 PSNR, the budget rule against 150k images,
# 250/750-frame clips), then the GPU tests of the stage scheduler and the RVM backbones.
set -u
mkdir -p ../shared/data && cp .data/wojtek.mp4 ../shared/data/ 2>/dev/null
source bench/device_env.sh
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 440 python3 -m pytest -q -s -m gpu -p no:cacheprovider tests/cli/test_default_preset_gpu.py 2>&1 \
  | grep -v "avatar.gauss: step\|avatar.progress" | tee $OUT/default_preset_full.txt \
  | grep -E "GPU-RECORD|passed|failed|rror|assert|Timeout|seconds" | tail -40 | tee $OUT/default_preset.txt
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/nets/test_rvm_torchvision.py tests/runner/test_schedule.py -k "torchvision or gpu" 2>&1 | tail -4
