#!/usr/bin/env bash
# One device call: the GPU tests and the stage benchmarks of drive, full frame and the viewer.
set -u
mkdir -p ../shared/data && cp .data/wojtek.mp4 ../shared/data/ 2>/dev/null
source bench/device_env.sh
nvidia-smi --query-gpu=name --format=csv,noheader
python3 -c "import viser, mediapipe, av, gsplat; print('env ok')"
timeout 330 python3 -m pytest -q -m gpu -p no:cacheprovider tests --ignore=tests/cli/test_default_preset_gpu.py --ignore=tests/workflows --ignore=tests/charts 2>&1 | tail -25 | tee $OUT/gpu_tests.txt
timeout 60 python3 bench/fullframe_bench.py > $OUT/fullframe.json 2> $OUT/fullframe.err; tail -c 1500 $OUT/fullframe.json; tail -3 $OUT/fullframe.err
timeout 60 python3 bench/viewer_bench.py > $OUT/viewer.json 2> $OUT/viewer.err; tail -c 800 $OUT/viewer.json; tail -3 $OUT/viewer.err
timeout 90 python3 bench/drive_bench.py --frames 2000 --batch 64 128 256 > $OUT/drive.json 2> $OUT/drive.err; tail -c 1500 $OUT/drive.json; tail -3 $OUT/drive.err
