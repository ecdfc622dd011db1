#!/usr/bin/env bash
# One device call (carry .whlT, .data), due after session 10: the GPU warm-up off and on (250-frame clip to track), the full-preset cross-reenactment test with the new
# default (train.shut_eye_repeat 8; the former default read eye closure r 0.459 on the H100), then the 10,000-frame
# actor run in full (e2e_10k; session 10's was cut off in the render stage at 140 s), then the former default's
# drive test with the time left.
set -u
START=$SECONDS
mkdir -p ../shared/data && cp .data/wojtek.mp4 ../shared/data/ 2>/dev/null
source bench/device_env.sh
nvidia-smi --query-gpu=name --format=csv,noheader
# the GPU warm-up beside the CPU stages (stages/runner/warm_up.py): the 250-frame 1080p clip to track, fresh process
# and store each, off then on; calibrate's stage seconds and its report's parts
timeout 60 python3 -c "
from pathlib import Path
from stages.bench.e2e import synthetic_clip
synthetic_clip(Path('/tmp/c250/clip.mp4'), 250, seed=3, size=1080)" 2>/dev/null
for w in 0 1 0 1; do
  rm -rf /tmp/c250/store
  AVATAR_GPU_WARMUP=$w timeout 60 python3 -m stages run --actor c250 --video /tmp/c250/clip.mp4 --store /tmp/c250/store \
    --device cuda --jobs 16 --until track > $OUT/warm$w.txt 2>&1
  echo "warm-up $w: $(grep -E '^(calibrate|track|total) ' $OUT/warm$w.txt | tr -s ' ' | tr '\n' ';')"
  python3 -c "import json; r=json.load(open('/tmp/c250/store/actors/c250/calibrate/report.json')); print(r['seconds'], r['parts_seconds'])"
done
echo "warm-up done at $((SECONDS-START)) s"
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
