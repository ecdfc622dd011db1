#!/usr/bin/env bash
# One device call: the default preset end to end (wojtek.mp4, 250/750-frame clips, the budget rule
# against 150k images), then the 10,000-frame pipeline benchmark, recorded.
set -u
mkdir -p ../shared/data && cp .data/wojtek.mp4 ../shared/data/ 2>/dev/null
source bench/device_env.sh
timeout 330 python3 -m pytest -q -s -m gpu -p no:cacheprovider tests/cli/test_default_preset_gpu.py 2>&1 | grep -E "GPU-RECORD|passed|failed|Error|assert" | tee $OUT/default_preset.txt
timeout 250 python3 -m stages bench --frames 10000 --workdir /tmp/e2e --record 2>&1 | tail -30 | tee $OUT/bench10k.txt
cp docs/benchmarks.json docs/benchmarks.md $OUT/ 2>/dev/null; cp /tmp/e2e/bench.json $OUT/bench10k.json 2>/dev/null
ls $OUT
