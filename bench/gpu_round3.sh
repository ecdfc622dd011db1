#!/usr/bin/env bash
# One device call: the default preset on wojtek.mp4 through the CLI, as a user runs it.
set -u
mkdir -p ../shared/data && cp .data/wojtek.mp4 ../shared/data/ 2>/dev/null
source bench/device_env.sh
ls -la ../shared/data/
t0=$(date +%s.%N)
timeout 280 python3 -m stages run --actor wojtek --video ../shared/data/wojtek.mp4 --store /tmp/st --device cuda > $OUT/wojtek_run.txt 2>&1
echo "rc=$? wall=$(echo "$(date +%s.%N) - $t0" | bc)"
grep -v "avatar.gauss: step\|avatar.progress" $OUT/wojtek_run.txt | tail -40
cp /tmp/st/actors/wojtek/avatar/report.md /tmp/st/actors/wojtek/avatar/report.json /tmp/st/actors/wojtek/assemble/report.json $OUT/ 2>/dev/null
cp /tmp/st/actors/wojtek/avatar/preview.mp4 $OUT/wojtek_preview.mp4 2>/dev/null
cat /tmp/st/actors/wojtek/avatar/report.md 2>/dev/null | head -40
