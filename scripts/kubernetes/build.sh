#!/usr/bin/env bash
# Builds the Kubernetes control plane the Kubernetes tests run against, from the Go module proxy, into a cache
# outside the clone (a clean clone then finds it built; a first build takes about 20 minutes on 2 cores):
#   etcd (from etcd's embed package, at the version Kubernetes pins), kube-apiserver, kube-controller-manager,
#   kube-scheduler (k8s.io/kubernetes, its staging modules replaced by their published versions) and kwok.
#
#   scripts/kubernetes/build.sh            builds what is missing, prints the directory holding the five binaries
#   scripts/kubernetes/build.sh --where    prints that directory, builds nothing; exit status 1 if incomplete
#
# Knobs: VCYCLE_KUBERNETES_BIN (a directory of prebuilt binaries: used as it is), VCYCLE_KUBERNETES_CACHE
# (default ${XDG_CACHE_HOME:-~/.cache}/vcycle/kubernetes), K8S_VERSION, KWOK_VERSION.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K8S_VERSION="${K8S_VERSION:-v1.37.2}"
KWOK_VERSION="${KWOK_VERSION:-v0.7.0}"
NAMES="etcd kube-apiserver kube-controller-manager kube-scheduler kwok"

if [ -n "${VCYCLE_KUBERNETES_BIN:-}" ]; then
  for n in $NAMES; do
    [ -x "$VCYCLE_KUBERNETES_BIN/$n" ] || { echo "error: VCYCLE_KUBERNETES_BIN=$VCYCLE_KUBERNETES_BIN has no $n" >&2; exit 2; }
  done
  echo "$VCYCLE_KUBERNETES_BIN"; exit 0
fi

CACHE="${VCYCLE_KUBERNETES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vcycle/kubernetes}"
BIN="$CACHE/$K8S_VERSION-kwok-$KWOK_VERSION/bin"
LOG="$CACHE/build.log"
mkdir -p "$BIN"
missing=""
for n in $NAMES; do [ -x "$BIN/$n" ] || missing="$missing $n"; done
if [ -z "$missing" ]; then echo "$BIN"; exit 0; fi
if [ "${1:-}" = "--where" ]; then echo "$BIN"; exit 1; fi  # where they go; not all built yet

log() { printf '[kubernetes build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
command -v go >/dev/null || { log "error: no go command (Go is needed to build the Kubernetes testbed)"; exit 3; }
export GOFLAGS=-mod=mod CGO_ENABLED=0
if ! go mod download -json "k8s.io/kubernetes@$K8S_VERSION" >"$CACHE/kubernetes.json" 2>"$LOG"; then
  log "error: the Go module proxy did not give k8s.io/kubernetes@$K8S_VERSION:"; sed 's/^/    /' "$LOG" >&2
  exit 3
fi
kgomod="$(sed -n 's/^\s*"GoMod": "\(.*\)",$/\1/p' "$CACHE/kubernetes.json")"
M="$CACHE/module"
mkdir -p "$M/cmd/etcd"
cp "$HERE/etcd-main.go" "$M/cmd/etcd/main.go"
# k8s.io/kubernetes replaces its staging modules with ./staging/...: a module that builds its commands must
# replace each of them with the published version (v1.37.2 -> v0.37.2).
staging="v0.${K8S_VERSION#v1.}"
{
  echo "module vcycletestbed"
  echo
  grep -E '^go [0-9]' "$kgomod"
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo
  echo "replace ("
  grep -Eo '^\s*k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$kgomod" \
    | awk -v v="$staging" '{print "\t" $1 " => " $1 " " v}'
  echo ")"
} > "$M/go.mod"
minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1"
ld="$ld -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
for c in kube-apiserver kube-controller-manager kube-scheduler; do
  [ -x "$BIN/$c" ] && continue
  log "building $c $K8S_VERSION (first time: minutes; see $LOG)"
  start=$(date +%s)
  (cd "$M" && go get "k8s.io/kubernetes/cmd/$c@$K8S_VERSION" && \
    go build -p 2 -trimpath -ldflags="$ld" -o "$BIN/$c.new" "k8s.io/kubernetes/cmd/$c") >>"$LOG" 2>&1 \
    || { log "error: building $c failed:"; tail -20 "$LOG" >&2; exit 4; }
  mv "$BIN/$c.new" "$BIN/$c"
  log "built $c in $(( $(date +%s) - start )) s"
done
if [ ! -x "$BIN/etcd" ]; then
  etcd_version="$(grep -E '^\s*go\.etcd\.io/etcd/server/v3 ' "$kgomod" | awk '{print $2}')"
  log "building etcd $etcd_version (the version k8s.io/kubernetes $K8S_VERSION pins)"
  start=$(date +%s)
  (cd "$M" && go get "go.etcd.io/etcd/server/v3@$etcd_version" "go.etcd.io/etcd/api/v3@$etcd_version" && \
    go build -p 2 -trimpath -ldflags="-s -w" -o "$BIN/etcd.new" ./cmd/etcd) >>"$LOG" 2>&1 \
    || { log "error: building etcd failed:"; tail -20 "$LOG" >&2; exit 4; }
  mv "$BIN/etcd.new" "$BIN/etcd"
  log "built etcd in $(( $(date +%s) - start )) s"
fi
if [ ! -x "$BIN/kwok" ]; then
  log "building kwok $KWOK_VERSION"
  start=$(date +%s)
  mkdir -p "$CACHE/kwok-bin"
  GOBIN="$CACHE/kwok-bin" go install -p 2 -trimpath -ldflags="-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" >>"$LOG" 2>&1 \
    || { log "error: building kwok failed:"; tail -20 "$LOG" >&2; exit 4; }
  mv "$CACHE/kwok-bin/kwok" "$BIN/kwok"
  log "built kwok in $(( $(date +%s) - start )) s"
fi
echo "$BIN"
