#!/usr/bin/env bash
# One device call (carry .whlT and .data), session 8, after grouped track and short-clip shards:
#   1. issue 14: the 10,000-frame driver video to drive.mp4, every stage (the clip is kept in /tmp/e2e for
#      bench/gpu_round13.sh's actor run in a second call while warm), plus the render/encode figures at 1,000 frames;
#   2. issue 19: the default preset on the 250- and 750-frame 1080p clips (tests/cli/test_default_preset_gpu.py).
set -u
mkdir -p ../shared/data && cp .data/wojtek.mp4 ../shared/data/ 2>/dev/null
source bench/device_env.sh
nvidia-smi --query-gpu=name --format=csv,noheader
mkdir -p /tmp/e2e
timeout 150 python3 -c "
from pathlib import Path
from stages.bench.e2e import synthetic_clip
synthetic_clip(Path('/tmp/e2e/synthetic-10000.mp4'), 10000)" 2>&1 | tail -1
timeout 260 python3 bench/drive_bench.py --frames 1000 --e2e-frames 10000 --e2e-clip /tmp/e2e/synthetic-10000.mp4 --jobs 16 \
  --out $OUT/drive_bench.json 2>&1 | grep -v "avatar.progress" > $OUT/drive_bench.log
grep -E "runner: |drive|seconds" $OUT/drive_bench.log | grep -v "shard [0-9]*:" | cut -c1-200 | tail -25
timeout 200 python3 -m pytest -q -s -m gpu -p no:cacheprovider tests/cli/test_default_preset_gpu.py -k short 2>&1 \
  | grep -v "avatar.gauss: step\|avatar.progress" > $OUT/short_full.txt
grep -E "GPU-RECORD|passed|failed|assert" $OUT/short_full.txt | cut -c1-1500 | tail -12
