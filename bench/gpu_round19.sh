#!/usr/bin/env bash
# One device call (carry .whlT, .data), session 10: the gsplat covariance test (train.triangle_frame's path; its
# test had a bug of its own on 2026-12-07), then wojtek.mp4's default preset with the training options issue #14
# and #19 found on the CPU (triangle_frame, shut_eye_repeat), then the full-preset cross-reenactment test.
set -u
START=$SECONDS
source bench/device_env.sh
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/gauss/test_render_gsplat.py 2>&1 \
  | grep -v "^$" | tail -30 > $OUT/gsplat.txt
tail -4 $OUT/gsplat.txt | cut -c1-300
echo "gsplat tests done at $((SECONDS-START)) s"
timeout 120 python3 -m stages run --actor w --video .data/wojtek.mp4 --store /tmp/wq/store --device cuda --jobs 16 \
  > $OUT/wojtek_run.txt 2>&1
tail -3 $OUT/wojtek_run.txt | cut -c1-300
echo "wojtek dataset at $((SECONDS-START)) s"
timeout 300 python3 bench/gpu_quality.py /tmp/wq/store/actors/w/dataset --seeds 0 1 --timeout 90 \
  --variants '{"base": {}, "tri": {"triangle_frame": true}, "tri_shut8": {"triangle_frame": true, "shut_eye_repeat": 8}}' \
  2>&1 | grep "^{" | tee $OUT/quality.jsonl | cut -c1-400 | tail -8
echo "variants done at $((SECONDS-START)) s"
LEFT=$((${BUDGET:-575} - (SECONDS-START)))
if [ $LEFT -gt 60 ]; then
  timeout $LEFT python3 -m pytest -q -s -m gpu -p no:cacheprovider tests/drive/test_cross_reenactment.py \
    -k full_preset 2>&1 | grep -v "avatar.gauss: step\|avatar.progress" > $OUT/drive_full.txt
  grep -E "passed|failed|assert|closure|r =|XPASS|xfail" $OUT/drive_full.txt | cut -c1-300 | tail -12
fi
echo "end at $((SECONDS-START)) s"
