#!/bin/sh
# Build-time check of the masks image's onnxruntime flavour (run by images/masks/Containerfile):
#
#   check_cuda_libs.sh FLAVOUR LIB_DIRS CAPI_DIR
#
# FLAVOUR   cuda | cpu (the TORCH_FLAVOR build argument)
# LIB_DIRS  colon-separated folders the image's LD_LIBRARY_PATH lists for the nvidia-* wheel libraries
# CAPI_DIR  the installed onnxruntime/capi folder (holds libonnxruntime_providers_cuda.so in the GPU build)
#
# cuda: onnxruntime's CUDA provider library is there, every CUDA 13 / cuDNN 9 library it loads is in
#       LIB_DIRS, and (where ldd exists) the loader resolves its CUDA dependencies from LIB_DIRS alone.
#       Without this, onnxruntime-gpu still lists CUDAExecutionProvider but sessions fall back to the CPU.
# cpu:  the CPU build (no CUDA provider library).
# Exit 0 when the flavour is sound, 1 with one line per problem, 2 on a wrong call.
set -u
[ $# -eq 3 ] || { echo "usage: check_cuda_libs.sh cuda|cpu LIB_DIRS CAPI_DIR" >&2; exit 2; }
flavour=$1 dirs=$2 capi=$3
provider=$capi/libonnxruntime_providers_cuda.so
# the sonames onnxruntime-gpu 1.31 (CUDA 13 build) needs at run time, besides the driver's libcuda.so.1
NEEDED=${CHECK_CUDA_LIBS_NEEDED:-"libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcufft.so.12 libcudnn.so.9"}

case "$flavour" in
  cpu)
    if [ -e "$provider" ]; then
      echo "check_cuda_libs: TORCH_FLAVOR=cpu but $provider exists (the GPU onnxruntime is installed)" >&2
      exit 1
    fi
    echo "check_cuda_libs: cpu flavour, CPU onnxruntime"
    exit 0 ;;
  cuda) ;;
  *) echo "check_cuda_libs: TORCH_FLAVOR must be cuda or cpu, not '$flavour'" >&2; exit 2 ;;
esac

bad=0
if [ ! -f "$provider" ]; then
  echo "check_cuda_libs: $provider missing: the cuda lock must install onnxruntime-gpu" >&2
  bad=1
fi
for so in $NEEDED; do
  found=
  old_ifs=$IFS; IFS=:
  for d in $dirs; do
    [ -n "$d" ] && [ -e "$d/$so" ] && { found=$d; break; }
  done
  IFS=$old_ifs
  if [ -z "$found" ]; then
    echo "check_cuda_libs: $so is in none of $dirs (its nvidia-* wheel missing from the lock, or LD_LIBRARY_PATH wrong)" >&2
    bad=1
  fi
done
if [ $bad = 0 ] && command -v ldd >/dev/null 2>&1; then
  missing=$(LD_LIBRARY_PATH=$dirs ldd "$provider" 2>&1 | grep 'not found' | grep -E 'lib(cudart|cublas|cublasLt|curand|cufft|cudnn|nvrtc|nvJitLink)[^ ]*' || true)
  if [ -n "$missing" ]; then
    echo "check_cuda_libs: the loader does not resolve $provider's CUDA libraries from $dirs:" >&2
    echo "$missing" >&2
    bad=1
  fi
fi
[ $bad = 0 ] && echo "check_cuda_libs: cuda flavour, onnxruntime-gpu finds its CUDA libraries in $dirs"
exit $bad
