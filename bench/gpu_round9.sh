#!/usr/bin/env bash
# One device call (carry .whlT): issue #17's 10,000-frame run, video to avatar, on one GPU.
#   1. the synthetic 10,000-frame clip rendered and gsplat's kernels compiled, outside the clock (as the train
#      image does at build time);
#   2. `avatar bench --frames 10000 --record` (full preset, every stage, the overlap); bench.json and the
#      recorded docs/benchmarks.json come back in $OUT.
# The driver figure follows in a second call while the machine is warm (bench/gpu_round9b.sh: the clip stays in /tmp).
set -u
source bench/device_env.sh
nvidia-smi --query-gpu=name --format=csv,noheader
mkdir -p /tmp/e2e
timeout 150 python3 -c "
from pathlib import Path
from stages.bench.e2e import synthetic_clip
synthetic_clip(Path('/tmp/e2e/synthetic-10000.mp4'), 10000)" 2>&1 | tail -2
timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/gauss/test_render_gsplat.py 2>&1 | tail -3 | tee $OUT/gsplat_test.txt
timeout 330 python3 -m stages bench --frames 10000 --workdir /tmp/e2e --record 2>&1 \
  | grep -v "avatar.progress\|avatar.gauss: step" | tee $OUT/bench10k_full.txt | tail -40
cp /tmp/e2e/bench.json $OUT/bench10k.json 2>/dev/null
cp docs/benchmarks.json $OUT/benchmarks.json 2>/dev/null
