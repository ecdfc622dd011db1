#!/usr/bin/env bash
# One device call (carry .whlT and .data): the figures issue #17 and #14 still need on one H100.
#   1. calibrate alone, LM solver against the Adam route, short clip and 10k frames, with identity error;
#   2. the 10,000-frame pipeline end to end with the stage overlap (avatar bench), recorded;
# and, if time is left, 3. the 10,000-frame driver to drive.mp4 (bench/drive_bench.py), its JSON kept.
set -u
mkdir -p ../shared/data && cp .data/wojtek.mp4 ../shared/data/ 2>/dev/null
source bench/device_env.sh
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 120 python3 bench/calibrate_bench.py --frames 250,10000 --seeds 2 --configs default,adam 2>&1 | tail -5 | tee $OUT/calibrate.txt
timeout 300 python3 -m stages bench --frames 10000 --workdir /tmp/e2e --record 2>&1 | tail -30 | tee $OUT/bench10k.txt
cp /tmp/e2e/bench.json $OUT/bench10k.json 2>/dev/null
timeout 150 python3 bench/drive_bench.py --frames 2000 --e2e-frames 10000 --jobs 16 --out $OUT/drive_bench.json 2>&1 | tail -5
