#!/usr/bin/env bash
# Source on the GPU machine (which has torch + CUDA but not our other dependencies): installs the
# wheels carried in .whl/ into /tmp/site and puts them and the repository on PYTHONPATH.
#   source bench/device_env.sh
set -u
if [ -d .whl ] && [ ! -f /tmp/site/.done ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && touch /tmp/site/.done || echo "wheel install failed" >&2
fi
export PYTHONPATH=/tmp/site:$PWD
export PYTHONUNBUFFERED=1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-/tmp/torch_extensions}  # survives between calls while warm
