#!/usr/bin/env bash
# One device call (carry .whlT, as bench/gpu_round11.sh): the fixed costs of a 250-frame clip (issue 19, goal < 30 s).
#   1. the default preset end to end on a synthetic 1080p clip (seed 3), then bench/fixed_costs.py: per-stage
#      seconds, assemble's phases (steadiness_wait: what the frame-by-frame fit held the stage up), the train
#      stage's set-up phases and first step (wall and CPU seconds);
#   2. train()'s set-up alone on that dataset, twice (the second with gsplat's kernels and CUDA warm), and
#      once with the shell fit's plain visual-hull votes on the CPU (the code before this change);
#   3. assemble alone (bench/assemble_bench.py, GPU steadiness fit) and the GPU tests of the hull votes and warm-up.
set -u
source bench/device_env.sh
nvidia-smi --query-gpu=name --format=csv,noheader
python3 -c "
from pathlib import Path
from stages.bench.e2e import synthetic_clip
synthetic_clip(Path('/tmp/c250/clip.mp4'), 250, seed=3, size=1080)" 2>/dev/null
rm -rf /tmp/c250/store
timeout 200 python3 -m stages run --actor c250 --video /tmp/c250/clip.mp4 --store /tmp/c250/store --device cuda --jobs 16 \
  > $OUT/run250.txt 2> $OUT/run250.err; tail -14 $OUT/run250.txt
grep "set-up before\|frame cache\|input:" $OUT/run250.err | cut -c1-400
python3 bench/fixed_costs.py /tmp/c250/store c250 | tee $OUT/fixed_costs.json
timeout 90 python3 bench/train_setup_bench.py --dataset /tmp/c250/store/actors/c250/dataset --device cuda --repeat 2 \
  2> $OUT/setup_bench.err | tee $OUT/setup_bench.json
timeout 60 python3 bench/train_setup_bench.py --dataset /tmp/c250/store/actors/c250/dataset --device cuda \
  --reference-hull 2> $OUT/setup_bench_ref.err | tee $OUT/setup_bench_ref.json
# assemble alone at 250 frames, twice in one process: the steadiness fit on the GPU beside the writer and the overlay
timeout 90 python3 bench/assemble_bench.py --frames 250 --repeat 2 --device cuda --jobs 16 --workdir /tmp/asm250 \
  2> $OUT/assemble_bench.err | tee $OUT/assemble_bench.json
timeout 60 python3 -m pytest -q -x -p no:cacheprovider -m gpu tests/gauss/test_shell.py tests/gauss/test_render_ref.py \
  2>&1 | tail -3
