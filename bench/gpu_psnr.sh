#!/usr/bin/env bash
# One device call (carry .lp, as bench/gpu_round6.sh: .lp/G.tar.xz = gsplat, .lp/dataset.tar.xz =
# wojtek.mp4's assembled dataset of a CPU run): issue 19's held-out PSNR on wojtek, default preset,
# A/B of what this branch changed, same dataset, same seed (bench/psnr_probe.py prints one JSON line
# each: PSNR mean/worst over the 40 held-out frames at 512 px, the error's share by region, train s):
#   1. train.shell=off (the avatar as before: Gaussians on the stand-in's face mesh only);
#   2. the default (train.shell=auto: scalp shell and neck tube on the face-only stand-in, density 0.25,
#      fitted to 24 training frames' head masks: train.shell_fit_frames);
#   3. the plain shell (not fitted: shell_fit_frames 0, the default before the fit);
#   4. the default plus train.pose_condition (the MLP also sees the head rotation).
set -u
mkdir -p /tmp/siteG /tmp/ds
xz -dc .lp/G.tar.xz | tar x -C /tmp/siteG
xz -dc .lp/dataset.tar.xz | tar x -C /tmp/ds
export PYTHONPATH=/tmp/siteG:$PWD TORCH_CUDA_ARCH_LIST=9.0 TORCH_EXTENSIONS_DIR=/tmp/torch_extensions PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
DS=$(dirname "$(find /tmp/ds -type d -name imgs | head -1)")
t=250  # the first run JIT-compiles gsplat (about 70 s)
for v in '{"shell": "off"}' '{}' '{"shell_fit_frames": 0}' '{"pose_condition": true}'; do
  n=$(echo "$v" | tr -dc 'a-z_0-9')
  timeout $t python3 bench/psnr_probe.py "$DS" "$v" --preset full --device cuda --eval-res 512 \
    --png-dir "$OUT/probe_${n:-default}" 2>&1 | grep -v "avatar.gauss: step" | tail -3
  t=110
done
