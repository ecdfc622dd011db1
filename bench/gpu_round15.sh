#!/usr/bin/env bash
# One device call (carry .whlT and .data), session 8: every open speed goal in one call, by priority.
#   1. issue 14: the 10,000-frame driver video to drive.mp4, every stage, and render/encode at 1,000 frames;
#   2. issue 19: the default preset on the 250- and 750-frame 1080p clips;
#   3. issue 17: `avatar bench --frames 10000` (the same 10,000-frame clip), with the time left.
set -u
START=$SECONDS
mkdir -p ../shared/data && cp .data/wojtek.mp4 ../shared/data/ 2>/dev/null
source bench/device_env.sh
nvidia-smi --query-gpu=name --format=csv,noheader
mkdir -p /tmp/e2e
timeout 120 python3 -c "
from pathlib import Path
from stages.bench.e2e import synthetic_clip
synthetic_clip(Path('/tmp/e2e/synthetic-10000.mp4'), 10000)" 2>&1 | tail -1
echo "clip ready at $((SECONDS-START)) s"
timeout 200 python3 bench/drive_bench.py --frames 1000 --e2e-frames 10000 --e2e-clip /tmp/e2e/synthetic-10000.mp4 --jobs 16 \
  --out $OUT/drive_bench.json 2>&1 | grep -v "avatar.progress" > $OUT/drive_bench.log
grep -E "runner: .*(finished|frames in)|e2e|drive_|seconds" $OUT/drive_bench.log | grep -v "shard [0-9]*:" | cut -c1-180 | tail -16
echo "driver done at $((SECONDS-START)) s"
timeout 170 python3 -m pytest -q -s -m gpu -p no:cacheprovider tests/cli/test_default_preset_gpu.py -k short 2>&1 \
  | grep -v "avatar.gauss: step\|avatar.progress" > $OUT/short_full.txt
grep -E "GPU-RECORD|passed|failed" $OUT/short_full.txt | cut -c1-1200 | tail -6
echo "short clips done at $((SECONDS-START)) s"
LEFT=$((${BUDGET:-575} - (SECONDS-START)))
if [ $LEFT -gt 60 ]; then
  timeout $LEFT python3 -m stages bench --frames 10000 --workdir /tmp/e2e --jobs 16 2>&1 \
    | grep -v "avatar.progress\|avatar.gauss: step" > $OUT/bench10k_full.txt
  grep -v "shard [0-9]*:\|avatar\." $OUT/bench10k_full.txt | cut -c1-200 | tail -24
  cp /tmp/e2e/bench.json $OUT/bench10k.json 2>/dev/null
fi
echo "end at $((SECONDS-START)) s"
