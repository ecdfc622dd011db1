#!/usr/bin/env bash
# One device call (carry .whlT): issue #14's figures on one GPU.
#   1. the GPU test of gsplat's covariance path (Gaussians in their triangle's frame) against the reference
#      renderer; it also compiles gsplat's kernels before any clock starts;
#   2. bench/drive_bench.py: drive render fps (encode excluded), drive fps with audio, and a 10,000-frame driver
#      video to drive.mp4 (the driver's ingest, landmarks, calibrate, track, then the drive step), JSON in $OUT.
set -u
source bench/device_env.sh
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/gauss/test_render_gsplat.py 2>&1 | tail -3 | tee $OUT/gsplat_test.txt
timeout 400 python3 bench/drive_bench.py --frames 2000 --e2e-frames 10000 --jobs 16 --out $OUT/drive_bench.json 2>&1 \
  | grep -v "avatar.progress" | tee $OUT/drive_bench.log | tail -15
