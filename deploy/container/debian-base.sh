#!/bin/sh
# Build a Debian base image for the Containerfiles without a container registry:
# debootstrap a minimal Debian root file system and import it into podman.
#
#   deploy/container/debian-base.sh [IMAGE]      (root; default IMAGE localhost/remembrancer-debian:bookworm)
#
# Environment: SUITE (default bookworm), MIRROR (default http://deb.debian.org/debian),
# SECURITY_MIRROR (default http://deb.debian.org/debian-security).
# Where a registry is reachable, docker.io/library/debian:bookworm-slim does the same job.
set -eu
image=${1:-localhost/remembrancer-debian:bookworm}
suite=${SUITE:-bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}
security=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}

command -v debootstrap >/dev/null || { echo "debian-base: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
command -v podman >/dev/null || { echo "debian-base: podman is not installed (apt-get install podman)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "debian-base: debootstrap needs root" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
debootstrap --variant=minbase --include=ca-certificates "$suite" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -20 "$work/debootstrap.log" >&2; echo "debian-base: debootstrap failed" >&2; exit 1; }
cat >"$work/rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security $suite-security main
SOURCES
rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/tmp/"*
tar -C "$work/rootfs" --numeric-owner -c . | podman import --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
echo "$image"
