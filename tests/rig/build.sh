#!/usr/bin/env bash
# Builds the rig's binaries from the Go module proxy into a cache outside the repo, keyed by
# component and version. A binary that is already there is never rebuilt.
#   usage: tests/rig/build.sh            (prints the bin directories on stdout, one per line)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

CACHE=${AGENTWORKER_RIG_CACHE:-$HOME/.cache/agentworker-rig}
export GOMODCACHE=$CACHE/gomod GOCACHE=$CACHE/gobuild GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$CACHE/src" "$CACHE/bin"

log() { echo "[rig-build] $*" >&2; }

# One build at a time: a second `make rig` waits for the first instead of racing it.
exec 9>"$CACHE/build.lock"
flock 9

# A wrapper module is needed because the upstream go.mod files carry replace directives.
init_module() {  # dir name
  rm -rf "$1"; mkdir -p "$1"
  (cd "$1" && go mod init "$2" >/dev/null 2>&1 && go mod edit -go=1.26.0)
}

build_kubernetes() {
  local out=$CACHE/bin/kubernetes-$K8S_VERSION
  if [[ -x $out/kube-apiserver && -x $out/kube-controller-manager && -x $out/kube-scheduler ]]; then
    echo "$out"; return
  fi
  local staging=v0.${K8S_VERSION#v1.} src=$CACHE/src/kubernetes-$K8S_VERSION
  log "building kubernetes $K8S_VERSION (cold: tens of minutes)"
  init_module "$src" rig.local/kube
  (
    cd "$src"
    go mod download -json "k8s.io/kubernetes@$K8S_VERSION" >/dev/null
    local modfile
    modfile=$GOMODCACHE/cache/download/k8s.io/kubernetes/@v/$K8S_VERSION.mod
    # Every staging module the release replaces with ./staging/... is published as v0.X.Y.
    for m in $(grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging' "$modfile" | awk '{print $1}'); do
      go mod edit -replace="$m=$m@$staging"
    done
    go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" \
      "k8s.io/kubernetes/cmd/kube-controller-manager@$K8S_VERSION" \
      "k8s.io/kubernetes/cmd/kube-scheduler@$K8S_VERSION" >&2
    if go list -m all | grep -q ' v0.0.0$'; then
      log "unresolved staging module:"; go list -m all | grep ' v0.0.0$' >&2; exit 1
    fi
    local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
    local ldf="-s -w" date; date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldf="$ldf -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
      ldf="$ldf -X $p.gitTreeState=clean -X $p.buildDate=$date"
    done
    mkdir -p "$out.tmp"
    go build -trimpath -ldflags "$ldf" -o "$out.tmp/" k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler
  )
  rm -rf "$out"; mv "$out.tmp" "$out"
  echo "$out"
}

build_etcd() {
  local out=$CACHE/bin/etcd-$ETCD_VERSION
  if [[ -x $out/etcd ]]; then echo "$out"; return; fi
  local src=$CACHE/src/etcd-$ETCD_VERSION
  log "building etcd $ETCD_VERSION"
  init_module "$src" rig.local/etcd
  (
    cd "$src"
    go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
    mkdir -p "$out.tmp"
    go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3
  )
  rm -rf "$out"; mv "$out.tmp" "$out"
  echo "$out"
}

build_helm() {
  local out=$CACHE/bin/helm-$HELM_VERSION
  if [[ -x $out/helm ]]; then echo "$out"; return; fi
  log "building helm $HELM_VERSION"
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local h=helm.sh/helm/v3
  mkdir -p "$out.tmp"
  GOBIN=$out.tmp go install -trimpath -ldflags "-s -w -X $h/internal/version.version=$HELM_VERSION \
    -X $h/pkg/chartutil.k8sVersionMajor=1 -X $h/pkg/chartutil.k8sVersionMinor=$minor \
    -X $h/pkg/lint/rules.k8sVersionMajor=1 -X $h/pkg/lint/rules.k8sVersionMinor=$minor" \
    "$h/cmd/helm@$HELM_VERSION"
  rm -rf "$out"; mv "$out.tmp" "$out"
  echo "$out"
}

build_livekit() {
  local out=$CACHE/bin/livekit-$LIVEKIT_VERSION
  if [[ -x $out/livekit-server ]]; then echo "$out"; return; fi
  local src=$CACHE/src/livekit-$LIVEKIT_VERSION
  log "building livekit-server $LIVEKIT_VERSION"
  init_module "$src" rig.local/livekit
  (
    cd "$src"
    go get -tool "github.com/livekit/livekit-server/cmd/server@$LIVEKIT_VERSION" >&2
    mkdir -p "$out.tmp"
    go build -trimpath -ldflags "-s -w" -o "$out.tmp/livekit-server" \
      github.com/livekit/livekit-server/cmd/server
  )
  rm -rf "$out"; mv "$out.tmp" "$out"
  echo "$out"
}

# Smallest first, so that a failure in a big one still leaves the others built.
build_etcd
build_helm
build_livekit
build_kubernetes
