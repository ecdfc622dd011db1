#!/usr/bin/env bash
# One device call (carry .whlT), 2026-12-07 session 8: the diagnostics behind issues 14/17/19's open goals.
#   1. ingest + landmarks of a 2,000-frame clip with the shard-level overlap on and off (the 10k driver's
#      ingest+landmarks took 26 s side by side against 14.4 s one after the other on 2026-11-25);
#   2. drive_bench without the end-to-end part: render fps and motion file -> drive.mp4 with segmented encoders;
#   3. the 250-frame clip end to end with the train stage's phase log lines;
#   4. train_bench's step profile (11.5 ms against 8.5 ms on 2026-11-24);
#   5. encode_bench; the gsplat covariance test's failure in full.
set -u
source bench/device_env.sh
nvidia-smi --query-gpu=name --format=csv,noheader
nproc
python3 -c "
from pathlib import Path
from stages.bench.e2e import synthetic_clip
synthetic_clip(Path('/tmp/ovl/clip2000.mp4'), 2000)
synthetic_clip(Path('/tmp/c250/clip.mp4'), 250, seed=3, size=1080)" 2>&1 | tail -2
for ov in 1 0 1; do
  rm -rf /tmp/ovl/s
  /usr/bin/time -f "overlap=$ov wall %e s user %U sys %S" env AVATAR_SHARD_OVERLAP=$ov timeout 60 python3 -m stages run \
    --actor a --video /tmp/ovl/clip2000.mp4 --store /tmp/ovl/s --device cuda --jobs 16 --until landmarks 2>&1 \
    | grep -E "frames in|overlap=|face detection" | tee -a $OUT/overlap.txt
done
timeout 150 python3 bench/drive_bench.py --frames 2000 --jobs 16 --out $OUT/drive_bench.json 2>&1 \
  | grep -v "avatar.progress" > $OUT/drive_bench.log; tail -4 $OUT/drive_bench.log
timeout 100 python3 -m stages run --actor c250 --video /tmp/c250/clip.mp4 --store /tmp/c250/store --device cuda --jobs 16 \
  > $OUT/run250.txt 2> $OUT/run250.err; grep -v "avatar.progress\|step [0-9]*[1-9]00/" $OUT/run250.err | cut -c1-200 | tail -60; tail -14 $OUT/run250.txt
timeout 80 python3 bench/train_bench.py --steps 40 --e2e-steps 100 --loader-batches 20 --profile > $OUT/train_bench.json 2> $OUT/train_profile.txt
grep -A35 "Name" $OUT/train_profile.txt | head -40; tail -c 1500 $OUT/train_bench.json
timeout 40 python3 bench/encode_bench.py --frames 2000 | tee $OUT/encode_bench.json
timeout 100 python3 -m pytest -q -x -p no:cacheprovider -m gpu tests/gauss/test_render_gsplat.py 2>&1 | tail -60 > $OUT/gsplat_test.txt
tail -40 $OUT/gsplat_test.txt
