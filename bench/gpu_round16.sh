#!/usr/bin/env bash
# One short device call (carry .whlT), session 8, with the last of the budget:
#   1. issue 19: the default preset on the 250-frame 1080p clip (short-clip shards, grouped track, train set-up);
#   2. issue 14: the 10,000-frame driver video to drive.mp4 with the time left (grouped track at 10,000 frames).
set -u
START=$SECONDS
source bench/device_env.sh
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python3 -m pytest -q -s -m gpu -p no:cacheprovider tests/cli/test_default_preset_gpu.py -k "short and 250" 2>&1 \
  | grep -v "avatar.gauss: step\|avatar.progress" > $OUT/short_full.txt
grep -E "GPU-RECORD|passed|failed" $OUT/short_full.txt | cut -c1-1500 | tail -4
echo "250 done at $((SECONDS-START)) s"
mkdir -p /tmp/e2e
LEFT=$((${BUDGET:-280} - (SECONDS-START)))
timeout $LEFT python3 bench/drive_bench.py --frames 500 --batch 256 --encode-frames 250 --e2e-frames 10000 --jobs 16 \
  --out $OUT/drive_bench.json 2>&1 | grep -v "avatar.progress" > $OUT/drive_bench.log
grep -E "runner: .*(finished|frames in)|e2e|drive_|seconds" $OUT/drive_bench.log | grep -v "shard [0-9]*:" | cut -c1-180 | tail -16
echo "end at $((SECONDS-START)) s"
