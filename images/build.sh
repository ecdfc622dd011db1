#!/usr/bin/env bash
# Build (and optionally push) the pipeline's container images.
#
#   images/build.sh [--push] [--dry-run] [tracker|masks|train ...]      (default: all three)
#
# Environment:
#   REGISTRY   where the images go: $REGISTRY/<image>:$TAG (default localhost/avatar-pipeline)
#   TAG        image tag (default: the git commit, short)
#   BUILDER    docker | podman | buildah (default: the first that works: docker buildx with a
#              reachable engine, then podman, then buildah)
#   TORCH_FLAVOR          cuda | cpu (default cuda): the torch build (tracker, train) and the
#                         onnxruntime build (masks: onnxruntime-gpu with CUDA 13 wheels, or CPU)
#   TORCH_CUDA_ARCH_LIST  GPU architectures gsplat's kernels are compiled for (train image)
#   BASE_REGISTRY         registry of the base images (default docker.io)
#   BUILD_ARGS            more --build-arg KEY=VALUE words, e.g. "BASE_IMAGE=... BUILDER_IMAGE=..."
#   BUILD_OPTS            more options for the build command, e.g. "--isolation chroot --pull=never"
# Prints one line per image: name, seconds, size.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
push=0
dry=0
images=()
for a in "$@"; do
  case "$a" in
    --push) push=1 ;;
    --dry-run) dry=1 ;;
    -h|--help) sed -n "2,17p" "$0"; exit 0 ;;
    *) [[ -f "$here/$a/Containerfile" ]] || { echo "build.sh: no images/$a/Containerfile; images are: tracker masks train" >&2; exit 2; }
       images+=("$a") ;;
  esac
done
[[ ${#images[@]} -gt 0 ]] || images=(tracker masks train)
case "${TORCH_FLAVOR:-cuda}" in
  cuda|cpu) ;;
  *) echo "build.sh: TORCH_FLAVOR must be cuda or cpu, not '$TORCH_FLAVOR'" >&2; exit 2 ;;
esac
REGISTRY=${REGISTRY:-localhost/avatar-pipeline}
TAG=${TAG:-$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo dev)}

if [[ -z "${BUILDER:-}" ]]; then
  if command -v docker >/dev/null && docker buildx version >/dev/null 2>&1 && docker info >/dev/null 2>&1; then BUILDER=docker
  elif command -v podman >/dev/null; then BUILDER=podman
  elif command -v buildah >/dev/null; then BUILDER=buildah
  else echo "build.sh: needs docker (with buildx and an engine), podman or buildah" >&2; exit 2; fi
fi

run() { if [[ $dry == 1 ]]; then echo "$*"; else "$@"; fi; }

# A clean build context: only what the Containerfiles copy, tracked or new (never .venv, stores, caches).
ctx=$(mktemp -d "${TMPDIR:-/tmp}/avatar-ctx.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
(cd "$root" && git ls-files -co --exclude-standard -z -- pyproject.toml README.md stages workflows images \
   | xargs -0 -r sh -c 'for f; do [ -f "$f" ] && printf "%s\0" "$f"; done' sh \
   | tar --null -T - -cf - | tar -xf - -C "$ctx")

args=(--build-arg "TORCH_FLAVOR=${TORCH_FLAVOR:-cuda}" --build-arg "BASE_REGISTRY=${BASE_REGISTRY:-docker.io}")
[[ -n "${TORCH_CUDA_ARCH_LIST:-}" ]] && args+=(--build-arg "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST")
for kv in ${BUILD_ARGS:-}; do args+=(--build-arg "$kv"); done
# shellcheck disable=SC2206
opts=(${BUILD_OPTS:-})

for img in "${images[@]}"; do
  name="$REGISTRY/$img:$TAG"
  start=$(date +%s)
  case "$BUILDER" in
    docker)  run docker buildx build "${opts[@]}" "${args[@]}" -f "$ctx/images/$img/Containerfile" -t "$name" \
               $([[ $push == 1 ]] && echo --push || echo --load) "$ctx" ;;
    podman)  run podman build "${opts[@]}" "${args[@]}" -f "$ctx/images/$img/Containerfile" -t "$name" "$ctx"
             if [[ $push == 1 ]]; then run podman push "$name"; fi ;;
    buildah) run buildah build --layers "${opts[@]}" "${args[@]}" -f "$ctx/images/$img/Containerfile" -t "$name" "$ctx"
             if [[ $push == 1 ]]; then run buildah push "$name"; fi ;;
    *) echo "build.sh: unknown BUILDER=$BUILDER (docker, podman or buildah)" >&2; exit 2 ;;
  esac
  [[ $dry == 1 ]] && continue
  secs=$(( $(date +%s) - start ))
  size=$(case "$BUILDER" in
           docker) docker image inspect -f '{{.Size}}' "$name" 2>/dev/null ;;
           *) "$BUILDER" images --format '{{.Size}}' "$name" 2>/dev/null | head -1 ;;
         esac || true)
  echo "built $name in ${secs}s, size ${size:-unknown}"
done
echo "use them: avatar workflow render --registry $REGISTRY --tag $TAG  (or helm: --set images.registry=$REGISTRY,images.tag=$TAG)"
