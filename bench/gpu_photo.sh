#!/usr/bin/env bash
# One device call (carry .whlT and .data, as bench/gpu_round5.sh):
# does the ACTOR's tracking need its photometric level (issues #17/#19)? wojtek.mp4, default (full) preset,
# end to end on the GPU, once as it is (variant photo) and once without the image-based levels (variant
# landmarks: calibrate.appearance_steps 0, track.photometric_steps 0): each stage's seconds, the landmark
# error, the head jitter and the render stage's held-out PSNR at 512 px (bench/actor_photo_run.py, one JSON
# each in $OUT); then train seed 1 on each dataset (bench/psnr_probe.py, the default preset's training).
set -u
mkdir -p ../shared/data && cp .data/wojtek.mp4 ../shared/data/ 2>/dev/null
source bench/device_env.sh
nvidia-smi --query-gpu=name --format=csv,noheader
for v in photo landmarks; do
  timeout 200 python3 bench/actor_photo_run.py /tmp/photo_$v --variant $v --device cuda --until render \
    --video ../shared/data/wojtek.mp4 > $OUT/actor_photo_$v.json 2> $OUT/actor_photo_$v.log
  tail -c 1200 $OUT/actor_photo_$v.json; echo
done
for v in photo landmarks; do
  timeout 90 python3 bench/psnr_probe.py /tmp/photo_$v/actors/w/dataset '{"seed": 1}' --preset full --device cuda \
    --eval-res 512 2>&1 | grep -v "avatar.gauss: step" | tail -2 | tee $OUT/psnr_seed1_$v.json
done
