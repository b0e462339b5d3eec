#!/usr/bin/env bash
# `make images`: build the operator image, the worker runtime image and the example agent image
# (FROM the worker image) with docker, podman or buildah, whichever is found first
# (hack/builder.sh; BUILDER=... chooses). They are all the images the product runs: the operator
# image also serves the chart's `helm test` pod and holds the companion that `command` fleets'
# init container copies. `make push-images` (`hack/images.sh push`) pushes the same three names.
#
# Names: <REGISTRY>/agentworker/{agent-operator,agent-worker,example-agent}:<TAG>. REGISTRY is a
# registry host with an optional path (123456789012.dkr.ecr.eu-west-1.amazonaws.com/voice); empty
# (the default) leaves the names without a host, for local use only. TAG defaults to dev. The
# chart's image.registry takes the same REGISTRY and image.tag the same TAG (its image.repository
# is already agentworker/agent-operator). Pushing needs REGISTRY and a login to it (docker login,
# podman login, buildah login).
#
# Variables: REGISTRY, TAG; OPERATOR_IMAGE, WORKER_IMAGE, EXAMPLE_IMAGE (whole names that replace
# those made of REGISTRY and TAG); BASE_IMAGE (default the
# Dockerfiles' python:3.11-slim-bookworm; hack/base-image.sh makes a stand-in where no registry is
# reachable); PULL=missing|never (never: use only local images, never contact a registry);
# CA_BUNDLE: a CA bundle for pip inside the build, given to it as the build secret `ca-bundle`
# rather than a volume, because docker build has no volumes and a secret leaves no trace in the
# image. It defaults to $PIP_CERT, else $SSL_CERT_FILE, so a host behind a proxy that re-signs
# TLS builds as it installs; empty means pip's own CA list.
#
# buildah and podman keep layers in their store (--layers): an unchanged tree builds from cache,
# a source change redoes the wheel stage, the install and the final copy. pip's cache mount
# helps only where the index's answers may be cached (not behind a proxy that forbids it). With
# vfs every layer is a full copy and each rebuild leaves the old ones as the cache: about 1 GB per
# changed tree; `buildah rmi --prune` frees them (and the cache).
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/builder.sh

MODE="${1:-build}"
REGISTRY="${REGISTRY:-}"
TAG="${TAG:-dev}"
PREFIX="${REGISTRY:+${REGISTRY%/}/}agentworker"
OPERATOR_IMAGE="${OPERATOR_IMAGE:-$PREFIX/agent-operator:$TAG}"
WORKER_IMAGE="${WORKER_IMAGE:-$PREFIX/agent-worker:$TAG}"
EXAMPLE_IMAGE="${EXAMPLE_IMAGE:-$PREFIX/example-agent:$TAG}"
PULL="${PULL:-missing}"
CA_BUNDLE="${CA_BUNDLE-${PIP_CERT:-${SSL_CERT_FILE:-}}}"

case "$MODE" in
  build | push) ;;
  *) echo "images: usage: hack/images.sh [build|push]" >&2; exit 2 ;;
esac
pick_builder

if [[ "$MODE" == push ]]; then
  # No REGISTRY: the names have no host, and docker would take them for Docker Hub's.
  [[ -n "$REGISTRY" ]] || {
    echo "images: push needs REGISTRY=<registry host[/path]> (and TAG= as built)" >&2
    exit 2
  }
  for image in "$OPERATOR_IMAGE" "$WORKER_IMAGE" "$EXAMPLE_IMAGE"; do
    echo "images: $BUILDER push $image" >&2
    "$BUILDER" push "$image"
  done
  exit 0
fi

flags=()
if [[ -n "${BASE_IMAGE:-}" ]]; then
  flags+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
fi
if [[ -n "$CA_BUNDLE" ]]; then
  [[ -s "$CA_BUNDLE" ]] || { echo "images: CA_BUNDLE=$CA_BUNDLE is not a file" >&2; exit 1; }
  flags+=(--secret "id=ca-bundle,src=$CA_BUNDLE")
fi
case "$BUILDER:$PULL" in
  docker:missing) ;;
  docker:never) ;;  # docker build uses a local image as it is unless --pull is given
  buildah:missing) flags+=(--pull=false --layers) ;;
  buildah:never) flags+=(--pull=never --layers) ;;
  podman:missing | podman:never) flags+=("--pull=$PULL" --layers) ;;
  *) echo "images: PULL=$PULL is neither missing nor never" >&2; exit 1 ;;
esac

build() {
  local tag="$1"
  shift
  echo "images: $BUILDER build $tag" >&2
  local start=$SECONDS
  "$BUILDER" build "${flags[@]}" -t "$tag" "$@"
  echo "images: built $tag in $((SECONDS - start)) s" >&2
}

build "$OPERATOR_IMAGE" -f images/operator.Dockerfile .
build "$WORKER_IMAGE" -f images/worker.Dockerfile .
build "$EXAMPLE_IMAGE" --build-arg "WORKER_IMAGE=$WORKER_IMAGE" examples/agent-image
