#!/usr/bin/env bash
# A stand-in for python:3.11-slim-bookworm built from the Debian archive, for machines that reach
# no image registry (this project's CI and dev machines reach only PyPI, Debian and the Go proxy).
#
#   hack/base-image.sh            # prints the image name; then
#   BASE_IMAGE=localhost/python:3.11-slim-bookworm PULL=never hack/images.sh
#
# The root filesystem is Debian bookworm (+ updates, security) minbase with python3 (3.11),
# python3-venv, ca-certificates, netbase and tzdata, made by mmdebstrap without docs, man pages
# or apt lists, with mmdebstrap's merged-usr hook (as debootstrap does: no usrmerge, no perl).
# It differs from the official image in one way the Dockerfiles allow for: Python
# is Debian's /usr/bin/python3, not /usr/local/bin/python3. The tarball is cached in
# ~/.cache/agentworker-images/ keyed by this recipe; delete it to pick up new Debian updates.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/builder.sh

IMAGE="${BASE_IMAGE:-localhost/python:3.11-slim-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
PACKAGES="ca-certificates,netbase,tzdata,passwd,python3,python3-venv"
CACHE="${AGENTWORKER_IMAGES_CACHE:-$HOME/.cache/agentworker-images}"

RECIPE="bookworm minbase merged-usr $PACKAGES nodocs v1"
KEY="$(printf '%s' "$RECIPE" | sha256sum | cut -c1-12)"
TARBALL="$CACHE/python3.11-bookworm-$KEY.tar"

pick_builder
if [[ "$(image_label "$IMAGE" org.agentworker.base-recipe || true)" == "$KEY" ]]; then
  echo "$IMAGE"
  exit 0
fi

if [[ ! -s "$TARBALL" ]]; then
  if ! command -v mmdebstrap >/dev/null 2>&1; then
    echo "base-image: needs mmdebstrap (apt-get install -y mmdebstrap)" >&2
    exit 1
  fi
  mkdir -p "$CACHE"
  echo "base-image: mmdebstrap bookworm -> $TARBALL" >&2
  mmdebstrap --variant=minbase --format=tar --include="$PACKAGES" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*' \
    bookworm "$TARBALL.part" \
    "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" \
    "deb $SECURITY_MIRROR bookworm-security main" >&2
  mv "$TARBALL.part" "$TARBALL"
fi

echo "base-image: importing $TARBALL as $IMAGE ($BUILDER)" >&2
LABEL="org.agentworker.base-recipe=$KEY"
case "$BUILDER" in
  buildah)
    ctr="$(buildah from scratch)"
    trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
    buildah add "$ctr" "$TARBALL" / >/dev/null
    buildah config --env LANG=C.UTF-8 --cmd '["python3"]' --label "$LABEL" "$ctr"
    buildah commit --quiet "$ctr" "$IMAGE" >/dev/null
    ;;
  podman | docker)
    "$BUILDER" import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
      --change "LABEL $LABEL" "$TARBALL" "$IMAGE" >/dev/null
    ;;
esac
echo "$IMAGE"
