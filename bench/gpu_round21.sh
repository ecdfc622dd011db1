#!/usr/bin/env bash
# One device call (carry .whlT, .data), due after session 10: the full-preset cross-reenactment test with the new
# default (train.shut_eye_repeat 8; the former default read eye closure r 0.459 on the H100), then the 10,000-frame
# actor run in full (e2e_10k; session 10's was cut off in the render stage at 140 s), then the former default's
# drive test with the time left.
set -u
START=$SECONDS
mkdir -p ../shared/data && cp .data/wojtek.mp4 ../shared/data/ 2>/dev/null
source bench/device_env.sh
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 280 python3 -m pytest -q -s -m gpu -p no:cacheprovider tests/drive/test_cross_reenactment.py \
  -k "full_preset and default" 2>&1 | grep -v "avatar.gauss: step\|avatar.progress" > $OUT/drive_full.txt
grep -E "full preset|passed|failed" $OUT/drive_full.txt | cut -c1-300 | tail -4
echo "drive test done at $((SECONDS-START)) s"
LEFT=$((${BUDGET:-575} - (SECONDS-START)))
timeout $LEFT python3 -m stages bench --frames 10000 --workdir /tmp/e2e --jobs 16 2>&1 \
  | grep -v "avatar.progress\|avatar.gauss: step" > $OUT/bench10k_full.txt
grep -v "shard [0-9]*:\|avatar\." $OUT/bench10k_full.txt | cut -c1-200 | tail -24
cp /tmp/e2e/bench.json $OUT/bench10k.json 2>/dev/null
echo "end at $((SECONDS-START)) s"
