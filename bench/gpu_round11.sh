#!/usr/bin/env bash
# One device call (carry .whlT): what 2026-12-07's calls left open (docs/performance.md).
#   1. the GPU test of gsplat's covariance path, its failure printed in full (it failed on 2026-12-07, output lost);
#   2. H.264 on every core: one encoder against segments (bench/encode_bench.py);
#   3. the 10,000-frame driver to drive.mp4 with the segmented encoders (bench/drive_bench.py; goal < 90 s);
#   4. the train stage's phases on a 250-frame clip (log lines with times) and a profile of one training step.
set -u
source bench/device_env.sh
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python3 -m pytest -q -x -p no:cacheprovider -m gpu tests/gauss/test_render_gsplat.py 2>&1 | tail -60 > $OUT/gsplat_test.txt
tail -5 $OUT/gsplat_test.txt
timeout 60 python3 bench/encode_bench.py --frames 2000 | tee $OUT/encode_bench.json
timeout 250 python3 bench/drive_bench.py --frames 2000 --e2e-frames 10000 --jobs 16 --out $OUT/drive_bench.json 2>&1 \
  | grep -v "avatar.progress" > $OUT/drive_bench.log; tail -12 $OUT/drive_bench.log
python3 -c "
from pathlib import Path
from stages.bench.e2e import synthetic_clip
synthetic_clip(Path('/tmp/c250/clip.mp4'), 250, seed=3, size=1080)" 2>/dev/null
timeout 90 python3 -m stages run --actor c250 --video /tmp/c250/clip.mp4 --store /tmp/c250/store --device cuda --jobs 16 \
  > $OUT/run250.txt 2> $OUT/run250.err; grep "avatar.gauss\|avatar.train" $OUT/run250.err | grep -v "step [0-9]*[1-9]00/" | head -30; tail -14 $OUT/run250.txt
timeout 60 python3 bench/train_bench.py --steps 40 --e2e-steps 100 --loader-batches 20 --profile > $OUT/train_bench.json 2> $OUT/train_profile.txt
grep -A35 "Name" $OUT/train_profile.txt | head -40
