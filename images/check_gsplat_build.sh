#!/usr/bin/env bash
# Prove the train image's gsplat step on a CUDA machine that has no container engine: build gsplat
# from its (locked, hash-checked) source distribution with BUILD_NO_CUDA=0 and TORCH_CUDA_ARCH_LIST,
# as images/train/Containerfile does, into a throw-away folder on top of the machine's torch ($PYTHON,
# default python3); then check
# that the compiled module (gsplat.csrc, not a JIT build) loads and renders.
#
#   images/check_gsplat_build.sh gsplat-1.5.3.tar.gz [TORCH_CUDA_ARCH_LIST]     (default 9.0)
#
# Get the sdist where PyPI is reachable: pip download --no-deps --no-binary :all: --no-build-isolation gsplat==1.5.3
# Prints one JSON object: build seconds, the .so size, a render's time.
set -euo pipefail
sdist=${1:?usage: images/check_gsplat_build.sh gsplat-1.5.3.tar.gz [ARCH_LIST]}
arch=${2:-9.0}
here=$(cd "$(dirname "$0")" && pwd)
sha=$(sha256sum "$sdist" | cut -d' ' -f1)
grep -q "sha256:$sha" "$here/train/requirements.cuda.lock" \
  || { echo "check_gsplat_build: $sdist (sha256 $sha) is not the locked gsplat sdist" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
py=${PYTHON:-python3}
"$py" -c "import torch, setuptools" || { echo "check_gsplat_build: $py lacks torch or setuptools" >&2; exit 2; }
start=$(date +%s)
BUILD_NO_CUDA=0 TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS="${MAX_JOBS:-16}" TORCH_EXTENSIONS_DIR="$work/jit" \
  "$py" -m pip install -q --no-deps --no-build-isolation --no-index --target "$work/site" "$sdist" \
  >"$work/build.log" 2>&1 || { tail -40 "$work/build.log"; exit 1; }
build_s=$(( $(date +%s) - start ))
PYTHONPATH="$work/site" TORCH_EXTENSIONS_DIR="$work/jit" BUILD_S=$build_s ARCH="$arch" "$py" - <<'PY'
import json, os, time
import torch
import gsplat
assert gsplat.__file__.startswith(os.environ["PYTHONPATH"]), gsplat.__file__
from gsplat import csrc                      # the module compiled at build time
from gsplat.cuda import _backend
from gsplat.rendering import rasterization
assert _backend._C is csrc, "gsplat fell back to JIT"
assert not os.path.exists(os.environ["TORCH_EXTENSIONS_DIR"]), "a JIT build happened"
dev = "cuda"
n = 20000
g = torch.Generator(device=dev).manual_seed(0)
means = torch.randn(n, 3, device=dev, generator=g) * 0.3 + torch.tensor([0.0, 0.0, 3.0], device=dev)
quats = torch.nn.functional.normalize(torch.randn(n, 4, device=dev, generator=g), dim=-1)
scales = torch.rand(n, 3, device=dev, generator=g) * 0.02
opac = torch.rand(n, device=dev, generator=g)
colors = torch.rand(n, 3, device=dev, generator=g)
view = torch.eye(4, device=dev)[None]
K = torch.tensor([[[600.0, 0, 256], [0, 600.0, 256], [0, 0, 1]]], device=dev)
for _ in range(3):
    img, alpha, _ = rasterization(means, quats, scales, opac, colors, view, K, 512, 512)
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(20):
    img, alpha, _ = rasterization(means, quats, scales, opac, colors, view, K, 512, 512)
torch.cuda.synchronize()
ms = (time.perf_counter() - t) / 20 * 1000
assert img.shape == (1, 512, 512, 3) and float(alpha.max()) > 0
print(json.dumps({"gsplat_build_s": int(os.environ["BUILD_S"]), "arch_list": os.environ["ARCH"],
                  "csrc_so_bytes": os.path.getsize(csrc.__file__), "torch": torch.__version__,
                  "cuda": torch.version.cuda, "render_512_20k_ms": round(ms, 3)}))
PY
