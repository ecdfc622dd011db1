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
# Issue #17 item 4 on the 10,000-frame run's own dataset: does a smaller budget keep the held-out PSNR?
# (the budget rule gives 150k images here; each variant's learning rates still decay over its own budget)
ds=$(ls -d /tmp/e2e/store/actors/*/dataset 2>/dev/null | head -1)
if [ -n "$ds" ]; then
  timeout 180 python3 bench/gpu_quality.py "$ds" --seeds 0 --timeout 170 \
    --variants '{"img60k": {"steps": 3750}, "img90k": {"steps": 5625}}' 2>&1 | grep "^{" | tee $OUT/budget.jsonl | tail -3
fi
