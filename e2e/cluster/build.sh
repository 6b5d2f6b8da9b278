#!/usr/bin/env bash
# Build the local control plane's binaries from upstream Go modules, once per pinned version.
# Usage: e2e/cluster/build.sh [etcd] [kube-apiserver] [kube-controller-manager] [kube-scheduler]
#        [kubectl] [kwok] [helm] [promtool] [actionlint]
# (no argument: etcd, kube-apiserver, kube-controller-manager)
# Result: ~/.cache/streamflow/bin/<name>-<version>. Recipe and pitfalls: shared/MISSION.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../config/versions.env
source "$here/../../config/versions.env"
cache=${STREAMFLOW_CACHE:-$HOME/.cache/streamflow}
bin="$cache/bin"
mkdir -p "$bin"
export GOFLAGS=-buildvcs=false

log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# A binary built from a wrapper module (a module of our own requiring the upstream one), for
# upstream modules whose replace directives make `go install` fail. Extra arguments are
# `go mod edit` flags (e.g. a -replace= of a dependency the mirror refuses).
build_wrapped() {  # name version package-path module@version [go-mod-edit-flags...]
  local name=$1 version=$2 pkg=$3 module=$4
  shift 4
  local out="$bin/$name-$version"
  [ -x "$out" ] && return 0
  local mod="$cache/src/$name-$version"
  mkdir -p "$mod"
  log "$name $version"
  (cd "$mod" &&
    { [ -f go.mod ] || go mod init "streamflow.local/$name" >/dev/null 2>&1; } &&
    { [ $# -eq 0 ] || go mod edit "$@"; } &&
    go get "$module" &&
    go build -o "$out.tmp" "$pkg" && mv "$out.tmp" "$out")
}

# Kubernetes' own go.mod replaces every staging module k8s.io/X with ./staging/src/k8s.io/X;
# a module that requires k8s.io/kubernetes must pin each of them to v0.<minor>.<patch>.
k8s_module() {
  local mod="$cache/src/kubernetes-$KUBERNETES_VERSION"
  if [ ! -f "$mod/.ready-with-kubectl" ]; then
    mkdir -p "$mod"
    log "kubernetes $KUBERNETES_VERSION module"
    local staging_version="v0.${KUBERNETES_VERSION#*.}"
    (cd "$mod" &&
      rm -f go.mod go.sum &&
      go mod init streamflow.local/kubernetes >/dev/null 2>&1 &&
      go mod edit -go=1.24 -require="k8s.io/kubernetes@v$KUBERNETES_VERSION" &&
      local gomod
      gomod=$(go mod download -json "k8s.io/kubernetes@v$KUBERNETES_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])') &&
      for m in $(grep -oE '^\s*k8s.io/[a-z0-9-]+ => \./staging' "$gomod" | awk '{print $1}'); do
        case "$m" in k8s.io/sample-cli-plugin|k8s.io/sample-controller) continue ;; esac
        go mod edit -replace="$m=$m@$staging_version"
      done &&
      # Each package pinned: without @version, go get upgrades k8s.io/kubernetes to latest.
      go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@v$KUBERNETES_VERSION" \
        "k8s.io/kubernetes/cmd/kube-controller-manager@v$KUBERNETES_VERSION" \
        "k8s.io/kubernetes/cmd/kube-scheduler@v$KUBERNETES_VERSION" \
        "k8s.io/kubernetes/cmd/kubectl@v$KUBERNETES_VERSION" &&
      go mod tidy &&
      touch .ready-with-kubectl)
  fi
  echo "$mod"
}

build_k8s() {
  local name=$1 out="$bin/$1-$KUBERNETES_VERSION"
  [ -x "$out" ] && return 0
  local mod minor=${KUBERNETES_VERSION#*.}
  mod=$(k8s_module)
  minor=${minor%%.*}
  log "$name $KUBERNETES_VERSION (apiserver ~6 min cold, controller manager ~2 min)"
  local v=k8s.io/component-base/version
  (cd "$mod" && go build -ldflags "-s -w -X $v.gitVersion=v$KUBERNETES_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor" \
    -o "$out.tmp" "k8s.io/kubernetes/cmd/$name" && mv "$out.tmp" "$out")
}

build_go_install() {  # name module-path version
  local name=$1 pkg=$2 version=$3 out="$bin/$1-$3"
  [ -x "$out" ] && return 0
  log "$name $version"
  local gobin="$cache/src/gobin-$name-$version"
  mkdir -p "$gobin"
  GOBIN="$gobin" go install "$pkg@v$version"
  mv "$gobin/$name" "$out"
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(etcd kube-apiserver kube-controller-manager)
for t in "${targets[@]}"; do
  case "$t" in
    etcd) build_wrapped etcd "$ETCD_VERSION" go.etcd.io/etcd/server/v3 \
      "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" ;;
    kube-apiserver|kube-controller-manager|kube-scheduler|kubectl) build_k8s "$t" ;;
    kwok) build_go_install kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION" ;;
    helm) build_go_install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" ;;
    # promtool: prometheus' go.mod pins a cloud.google.com/go the mirror refuses (MISSION.md).
    promtool) build_wrapped promtool "$PROMETHEUS_VERSION" \
      github.com/prometheus/prometheus/cmd/promtool \
      "github.com/prometheus/prometheus/cmd/promtool@v$PROMETHEUS_VERSION" \
      -replace=cloud.google.com/go=cloud.google.com/go@v0.123.0 ;;
    actionlint) build_go_install actionlint github.com/rhysd/actionlint/cmd/actionlint "$ACTIONLINT_VERSION" ;;
    *) echo "unknown component: $t" >&2; exit 2 ;;
  esac
  log "ready: $t"
done
