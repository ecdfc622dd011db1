#!/usr/bin/env bash
# One device call (carry .whlT), session 8: issue #17's 10,000-frame run with grouped track and short-clip shards.
#   1. the synthetic 10,000-frame clip rendered outside the clock (kept in /tmp/e2e for bench/gpu_round9b.sh);
#   2. `avatar bench --frames 10000 --record` (full preset, every stage, the overlap);
#   3. the landmark-only model's GPU test.
set -u
source bench/device_env.sh
nvidia-smi --query-gpu=name --format=csv,noheader
mkdir -p /tmp/e2e
timeout 150 python3 -c "
from pathlib import Path
from stages.bench.e2e import synthetic_clip
synthetic_clip(Path('/tmp/e2e/synthetic-10000.mp4'), 10000)" 2>&1 | tail -1
timeout 380 python3 -m stages bench --frames 10000 --workdir /tmp/e2e --jobs 16 --record 2>&1 \
  | grep -v "avatar.progress\|avatar.gauss: step" | tee $OUT/bench10k_full.txt | grep -v "shard [0-9]*:" | cut -c1-220 | tail -45
cp /tmp/e2e/bench.json $OUT/bench10k.json 2>/dev/null
cp docs/benchmarks.json $OUT/benchmarks.json 2>/dev/null
timeout 40 python3 -m pytest -q -p no:cacheprovider -m gpu tests/face/test_landmark_model.py 2>&1 | tail -2
