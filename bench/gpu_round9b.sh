#!/usr/bin/env bash
# Second call of bench/gpu_round9.sh (machine still warm: gsplat compiled, /tmp/e2e/synthetic-10000.mp4 there):
# issue #14's drive figures: render fps, drive fps with audio, and the 10,000-frame driver video to drive.mp4
# (`avatar drive --video`'s stages + the drive step), on the same clip.
set -u
source bench/device_env.sh
nvidia-smi --query-gpu=name --format=csv,noheader
clip=/tmp/e2e/synthetic-10000.mp4
[ -f $clip ] || clip=""
timeout 400 python3 bench/drive_bench.py --frames 2000 --e2e-frames 10000 ${clip:+--e2e-clip $clip} --jobs 16 \
  --out $OUT/drive_bench.json 2>&1 | grep -v "avatar.progress" | tail -15
