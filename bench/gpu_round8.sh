#!/usr/bin/env bash
# One device call (carry .whlT): issue #17/#19's short-clip figures for assemble and calibrate on one H100.
#   1. assemble alone, 250 and 10,000 frames, twice each in one process (goal <= 2 s and <= 5 s; the second run
#      shows whether later runs in a process are slower), steadiness fit on the GPU; then 250 frames with the fit on
#      the CPU (--device cpu) for comparison;
#   2. calibrate's solver alone (LM + the 150-step appearance level), 250 frames, two seeds (goal <= 3 s with the
#      stage's fixed costs; identity error must stay 0.361 / 0.281 mm on seeds 2 / 3);
#   3. where the machine has git history: the same assemble bench on the code before (e37a58d) for the baseline.
# Stage-level calibrate and assemble times of a whole run: bench/gpu_round5.sh (tests/cli/test_default_preset_gpu.py).
set -u
source bench/device_env.sh
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 240 python3 bench/assemble_bench.py --frames 250,10000 --repeat 2 --device cuda --jobs 16 \
  > $OUT/assemble_cuda.json 2> $OUT/assemble_cuda.err; tail -3 $OUT/assemble_cuda.err
timeout 60 python3 bench/assemble_bench.py --frames 250 --device cpu --jobs 16 > $OUT/assemble_cpu.json 2>/dev/null
timeout 150 python3 bench/calibrate_bench.py --frames 250 --seeds 2,3 --configs default --appearance 150 2>&1 | tail -2 \
  | tee $OUT/calibrate.txt
if git archive e37a58d > /tmp/base.tar 2>/dev/null; then
  mkdir -p /tmp/base && tar -xf /tmp/base.tar -C /tmp/base && cp bench/assemble_bench.py /tmp/base/bench/
  (cd /tmp/base && timeout 120 python3 bench/assemble_bench.py --frames 250 --repeat 2 --device cuda --jobs 16 \
    > $OUT/assemble_cuda_before.json 2>/dev/null)
fi
python3 - <<'PY'
import json, os
for name in ("assemble_cuda", "assemble_cpu", "assemble_cuda_before"):
    path = os.path.join(os.environ["OUT"], name + ".json")
    if os.path.exists(path) and os.path.getsize(path):
        for r in json.load(open(path))["runs"]:
            print(name, r["frames"], "repeat", r["repeat"], "seconds", r["seconds"], "phases", r["phases_s"])
PY
