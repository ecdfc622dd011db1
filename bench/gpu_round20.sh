#!/usr/bin/env bash
# One short device call (carry .whlT, .data), session 10: the gsplat tests (the covariance one fixed; the first
# call on a fresh machine compiles gsplat, ~60 s), then wojtek.mp4's default preset with train.triangle_frame.
set -u
START=$SECONDS
source bench/device_env.sh
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/gauss/test_render_gsplat.py 2>&1 \
  | grep -v "^$" | tail -30 > $OUT/gsplat.txt
tail -4 $OUT/gsplat.txt | cut -c1-300
echo "gsplat tests done at $((SECONDS-START)) s"
timeout 150 python3 bench/wojtek_variant_gpu.py --video .data/wojtek.mp4 --train '{"triangle_frame": true}' 2>&1 | grep -v "avatar.progress" \
  > $OUT/wojtek_tri.txt
grep "^{" $OUT/wojtek_tri.txt || tail -5 $OUT/wojtek_tri.txt | cut -c1-300
echo "end at $((SECONDS-START)) s"
