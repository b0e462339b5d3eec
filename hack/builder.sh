# Sourced by hack/images.sh and hack/base-image.sh: picks the OCI builder into $BUILDER.
#
# docker (only when its daemon answers: a docker CLI without a daemon is common), then podman,
# then buildah; BUILDER=... chooses one. buildah and podman run without a daemon; for them the
# storage driver defaults to vfs and buildah's isolation to chroot, which work in a container or
# a VM without overlayfs or user namespaces (STORAGE_DRIVER and BUILDAH_ISOLATION override).

pick_builder() {
  if [[ -n "${BUILDER:-}" ]]; then
    if ! command -v "$BUILDER" >/dev/null 2>&1; then
      echo "images: BUILDER=$BUILDER is not installed" >&2
      return 1
    fi
  elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    BUILDER=docker
  elif command -v podman >/dev/null 2>&1; then
    BUILDER=podman
  elif command -v buildah >/dev/null 2>&1; then
    BUILDER=buildah
  else
    echo "images: no OCI builder: install docker (with a running daemon), podman or buildah" >&2
    echo "images: on Debian or Ubuntu: apt-get install -y buildah" >&2
    return 1
  fi
  if [[ "$BUILDER" != docker ]]; then
    export STORAGE_DRIVER="${STORAGE_DRIVER:-vfs}" BUILDAH_ISOLATION="${BUILDAH_ISOLATION:-chroot}"
  fi
}

# The value of label $2 on image $1 in the builder's local store; fails when there is no image.
image_label() {
  local format="{{index .Config.Labels \"$2\"}}"
  case "$BUILDER" in
    docker | podman) "$BUILDER" image inspect --format "$format" "$1" 2>/dev/null ;;
    buildah)
      buildah inspect --type image --format "{{index .OCIv1.Config.Labels \"$2\"}}" "$1" 2>/dev/null
      ;;
  esac
}
