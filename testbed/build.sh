#!/usr/bin/env bash
# Builds the test bed's control plane from upstream Go modules into target/testbed/bin:
# etcd, kube-apiserver, kube-scheduler, kube-controller-manager (k8s.io/kubernetes, pinned in
# testbed/go.mod) and kwok (testbed/kwok/go.mod). Reuses the binaries until a go.mod or go.sum
# changes. Prints the bin directory on its last line. With --check, builds nothing and fails
# unless the binaries are there and up to date.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
out="${SPILLWAY_TESTBED_BIN:-$root/target/testbed/bin}"
mkdir -p "$out"

stamp="$(cat "$here/go.mod" "$here/go.sum" "$here/kwok/go.mod" "$here/kwok/go.sum" "$here/cmd/etcd/main.go" "$0" | sha256sum | cut -c1-16)"
if [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$stamp" ]; then
  for b in etcd kube-apiserver kube-scheduler kube-controller-manager kubectl kwok; do
    [ -x "$out/$b" ] || { rm -f "$out/.stamp"; break; }
  done
  if [ -f "$out/.stamp" ]; then echo "$out"; exit 0; fi
fi
if [ "${1:-}" = "--check" ]; then
  echo "no up-to-date control plane in $out (stamp $stamp)" >&2
  exit 1
fi

# The version stamped into the binaries is the one go.mod pins, as upstream's hack/lib/version.sh does.
kver="$(cd "$here" && go list -m -f '{{.Version}}' k8s.io/kubernetes)"
major="${kver#v}"; major="${major%%.*}"
minor="${kver#v*.}"; minor="${minor%%.*}"
date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$kver -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
done

start=$(date +%s)
export CGO_ENABLED=0
(cd "$here" && go build -trimpath -ldflags "$ldflags" -o "$out/" \
  ./cmd/etcd k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl)
(cd "$here/kwok" && go build -trimpath -ldflags "-s -w" -o "$out/" sigs.k8s.io/kwok/cmd/kwok)
echo "$stamp" > "$out/.stamp"
echo "testbed: built $kver control plane and kwok in $(( $(date +%s) - start )) s" >&2
echo "$out"
