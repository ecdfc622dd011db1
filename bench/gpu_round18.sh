#!/usr/bin/env bash
# One device call (carry .whlT, .data), session 9: bench/gpu_round15.sh (the 10k driver, the 250/750-frame
# clips, the 10k actor run with the time left, capped by BUDGET), then the gsplat covariance test in full
# (train.triangle_frame's path; failed on the H100 on 2026-12-06, output cut off then).
set -u
START=$SECONDS
BUDGET=$(( ${BUDGET:-575} - 45 )) bash bench/gpu_round15.sh
source bench/device_env.sh
timeout 40 python3 -m pytest -q -x -p no:cacheprovider -m gpu tests/gauss/test_render_gsplat.py -k covariances 2>&1 \
  | grep -v "^$" | tail -40 > $OUT/gsplat_covars.txt
tail -25 $OUT/gsplat_covars.txt | cut -c1-300
echo "round18 end at $((SECONDS-START)) s"
