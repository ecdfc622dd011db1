#!/usr/bin/env bash
# One device call: the default preset on wojtek.mp4 (held-out PSNR goal 29 dB) and the budget rule
# against the old 150k-image budget, through the GPU test; then look for VGG-16 weights on the machine.
set -u
mkdir -p ../shared/data && cp .data/wojtek.mp4 ../shared/data/ 2>/dev/null
source bench/device_env.sh
timeout 420 python3 -m pytest -q -s -m gpu -p no:cacheprovider tests/cli/test_default_preset_gpu.py -k "wojtek or budget" 2>&1 \
  | grep -v "avatar.gauss: step\|avatar.progress" | tail -60 | tee $OUT/default_wojtek.txt
ls ~/.cache/torch/hub/checkpoints 2>&1
find / -xdev \( -name "vgg16*" -o -name "*.pth" -o -name "rvm_*" \) -size +1M 2>/dev/null | head
python3 -c "import torchvision; print('torchvision', torchvision.__version__)"
