#!/usr/bin/env bash
# Build the real Kubernetes control plane (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl),
# etcd and Kueue's controller manager from their Go modules, into a cache outside the repository keyed by
# version. Only what is missing is built; a second run is a no-op.
#
# Why wrapper modules: k8s.io/kubernetes (and etcd's server module) point their sibling modules at
# ./staging/... with replace directives, which Go ignores in a consumer's build. Each wrapper module
# requires the component and replaces every one of those siblings with its published release, a list
# generated from the component's own go.mod so that it follows new releases without hand edits. Each
# component gets its own wrapper so that one's dependency versions never move another's.
#
# Prints the bin directory on its last line.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
KUEUE_VERSION=${KUEUE_VERSION:-v0.19.2}
CACHE=${SHIPYARD_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shipyard/k8s}

if ! command -v go >/dev/null; then
  echo "k8s-bin: Go is not installed (need Go >= 1.26 to build Kubernetes $K8S_VERSION)" >&2
  exit 3
fi

# A staging module's release has the component's version with major 1 -> 0 (v1.37.2 -> v0.37.2);
# etcd's siblings share its own version.
staging_version() { case "$1" in v1.*) echo "v0.${1#v1.}";; *) echo "$1";; esac; }

# wrapper DIR MODULE VERSION: a go.mod that requires MODULE@VERSION with its local replaces resolved.
wrapper() {
  local dir=$1 module=$2 version=$3 gomod sv
  mkdir -p "$dir"
  [ -f "$dir/go.sum" ] && return 0
  gomod=$(cd / && GOFLAGS= go mod download -json "$module@$version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  sv=$(staging_version "$version")
  {
    echo "module shipyard.dev/build/$(basename "$dir")"
    echo
    echo "go $(awk '/^go /{print $2; exit}' "$gomod")"
    echo
    echo "require $module $version"
    echo
    # `a => ./x` or `a => ../x` lines, in a replace block or on their own: the sibling at its release.
    # (etcd marks modules it must never depend on with `=> ./FORBIDDEN_DEPENDENCY`: not siblings.)
    awk -v sv="$sv" '
      /=>[ \t]*\.\.?\// && !/FORBIDDEN/ { for (i = 1; i <= NF; i++) if ($i == "=>") { m = $(i-1); print "replace " m " => " m " " sv } }
    ' "$gomod"
  } > "$dir/go.mod.new"
  mv "$dir/go.mod.new" "$dir/go.mod"
}

# build DIR OUT PKG VERSION [LDFLAGS]
build() {
  local dir=$1 out=$2 pkg=$3 version=$4 ldflags=${5:-}
  [ -x "$out" ] && return 0
  local t0=$SECONDS
  # @version: a bare `go get` would upgrade the component to its newest release.
  (cd "$dir" && go get "$pkg@$version")
  (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ldflags" -o "$out.tmp" "$pkg")
  mv "$out.tmp" "$out"
  echo "k8s-bin: built $(basename "$out") in $((SECONDS - t0)) s ($(du -m "$out" | cut -f1) MiB)" >&2
}

BIN=$CACHE/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kueue-$KUEUE_VERSION
mkdir -p "$BIN" "$CACHE/src"
components=${K8S_BIN_COMPONENTS:-"etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kueue"}
missing=""
for c in $components; do [ -x "$BIN/$c" ] || missing="$missing $c"; done
if [ -z "$missing" ]; then echo "$BIN"; exit 0; fi
# One build at a time per cache (a test session and `make k8s-bin` may ask together): the second waits, then
# finds the binaries built.
exec 9>"$CACHE/.lock"
flock 9

minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
K8S_LDFLAGS="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 \
-X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean \
-X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 \
-X k8s.io/client-go/pkg/version.gitMinor=$minor"

for c in $missing; do
  case $c in
    etcd)
      wrapper "$CACHE/src/etcd-$ETCD_VERSION" go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
      build "$CACHE/src/etcd-$ETCD_VERSION" "$BIN/etcd" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" ;;
    kube-apiserver|kube-controller-manager|kube-scheduler)
      wrapper "$CACHE/src/kubernetes-$K8S_VERSION" k8s.io/kubernetes "$K8S_VERSION"
      build "$CACHE/src/kubernetes-$K8S_VERSION" "$BIN/$c" "k8s.io/kubernetes/cmd/$c" "$K8S_VERSION" "$K8S_LDFLAGS" ;;
    kubectl)
      wrapper "$CACHE/src/kubernetes-$K8S_VERSION" k8s.io/kubernetes "$K8S_VERSION"
      build "$CACHE/src/kubernetes-$K8S_VERSION" "$BIN/kubectl" "k8s.io/kubernetes/cmd/kubectl" "$K8S_VERSION" "$K8S_LDFLAGS" ;;
    kueue)
      wrapper "$CACHE/src/kueue-$KUEUE_VERSION" sigs.k8s.io/kueue "$KUEUE_VERSION"
      build "$CACHE/src/kueue-$KUEUE_VERSION" "$BIN/kueue" sigs.k8s.io/kueue/cmd/kueue "$KUEUE_VERSION" \
        "-X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION" ;;
    *) echo "k8s-bin: unknown component $c" >&2; exit 2 ;;
  esac
done
echo "$BIN"
