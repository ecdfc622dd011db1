#!/usr/bin/env bash
# Make a local Debian bookworm base image for smoke builds where no registry can be pulled from.
#   images/test-base.sh [IMAGE_NAME]      (default localhost/debian:bookworm-minbase)
# Needs root, debootstrap and buildah (apt-get install -y debootstrap buildah runc). About 30-60 s.
set -euo pipefail
name=${1:-localhost/debian:bookworm-minbase}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if buildah inspect --type image "$name" >/dev/null 2>&1; then
  echo "base image $name exists"; exit 0
fi
work=$(mktemp -d /var/tmp/avatar-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -20 "$work/debootstrap.log"; exit 1; }
# the same suites a Debian image carries, and no apt caches in the base
printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb http://deb.debian.org/debian-security bookworm-security main\n' \
  "$mirror" "$mirror" >"$work/rootfs/etc/apt/sources.list"
rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
ctr=$(buildah from scratch)
buildah add "$ctr" "$work/rootfs.tar" / >/dev/null
buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd /bin/bash "$ctr"
buildah commit --rm "$ctr" "$name" >/dev/null
echo "made base image $name"
