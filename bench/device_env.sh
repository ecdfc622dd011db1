#!/usr/bin/env bash
# Source on the GPU machine (which has torch + CUDA but not our other dependencies):
#   source bench/device_env.sh
# - wheels carried in .whl/ or .whlL/ (av, typer, pytest, ...) go to /tmp/site, those in .whlA/
#   (mediapipe and its needs; too big to travel with the others) to /tmp/siteA: /tmp survives
#   between calls while the machine stays warm, the repository's ignored folders do not;
# - onnxruntime-gpu, too big for one call, travels as parts (.whlO1/ ... .whlO5/, pieces of one
#   tar.xz of its package folder) stashed in /tmp/ortparts and unpacked to /tmp/siteO once all
#   five have arrived; its CUDA provider loads the CUDA 13 libraries torch ships (LD_LIBRARY_PATH);
# - PYTHONPATH lists them ahead of the repository.
set -u
for d in .whl .whlL; do
  if [ -d "$d" ] && [ ! -f /tmp/site/.done ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$d"/*.whl \
      && touch /tmp/site/.done || echo "wheel install from $d failed" >&2
  fi
done
if [ -d .whlA ] && [ ! -f /tmp/siteA/.done ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/siteA .whlA/*.whl \
    && touch /tmp/siteA/.done || echo "wheel install from .whlA failed" >&2
fi
mkdir -p /tmp/ortparts
for f in .whlO?/ort.?; do [ -f "$f" ] && cp "$f" /tmp/ortparts/; done
if [ ! -f /tmp/siteO/.done ] && [ "$(ls /tmp/ortparts 2>/dev/null | wc -l)" = 5 ]; then
  mkdir -p /tmp/siteO && cat /tmp/ortparts/ort.? | xz -d -T4 | tar xf - -C /tmp/siteO \
    && touch /tmp/siteO/.done || echo "onnxruntime-gpu unpack failed" >&2
fi
# Packages that travel as xz tarballs of their unpacked package folders (.whlT/*.tar.xz; smaller than
# wheels, so mediapipe, opencv and av fit the 64 MiB a call may carry): unpacked once into /tmp/siteT.
mkdir -p /tmp/siteT
for f in .whlT/*.tar.xz; do
  [ -f "$f" ] || continue
  b=$(basename "$f")
  [ -f "/tmp/siteT/.$b.done" ] && continue
  xz -d -T4 < "$f" | tar xf - -C /tmp/siteT && touch "/tmp/siteT/.$b.done" || echo "unpack of $f failed" >&2
done
SITES=/tmp/site
ls /tmp/siteT/.*.done >/dev/null 2>&1 && SITES=/tmp/siteT:$SITES
[ -f /tmp/siteA/.done ] && SITES=$SITES:/tmp/siteA
[ -f /tmp/siteO/.done ] && SITES=/tmp/siteO:$SITES
export PYTHONPATH=$SITES:$PWD
NV=$(python3 -c "import glob, os, site; print(':'.join(sorted({os.path.dirname(p) for s in site.getsitepackages() for p in glob.glob(os.path.join(s, 'nvidia', '**', 'lib*.so*'), recursive=True)})))" 2>/dev/null)
export LD_LIBRARY_PATH=${NV}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PYTHONUNBUFFERED=1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-/tmp/torch_extensions}  # survives between calls while warm
