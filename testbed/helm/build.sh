#!/usr/bin/env bash
# Builds helm for CI's `helm lint` and `helm template` of charts/spillway and the install tests:
# Helm 3 (helm.sh/helm/v3, pinned in testbed/helm/go.mod) into target/helm/bin by default, or
# with the argument 4, Helm 4 (helm.sh/helm/v4, pinned in testbed/helm/v4/go.mod) into
# target/helm/v4/bin. Reuses a binary until its go.mod or go.sum changes. Prints the binary's
# path on its last line.
set -euo pipefail
major="${1:-3}"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
case "$major" in
  3) mod="$here"; out="${SPILLWAY_HELM_BIN:-$root/target/helm/bin}" ;;
  4) mod="$here/v4"; out="${SPILLWAY_HELM4_BIN:-$root/target/helm/v4/bin}" ;;
  *) echo "usage: $0 [3|4]" >&2; exit 2 ;;
esac
mkdir -p "$out"

stamp="$(cat "$mod/go.mod" "$mod/go.sum" "$0" | sha256sum | cut -c1-16)"
if [ -x "$out/helm" ] && [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$stamp" ]; then
  echo "$out/helm"
  exit 0
fi

module="helm.sh/helm/v$major"
version="$(cd "$mod" && go list -m -f '{{.Version}}' "$module")"
ldflags="-s -w -X $module/internal/version.version=$version"
if [ "$major" = 3 ]; then
  # As upstream's Makefile: the Kubernetes version `helm template` and `helm lint` assume (else
  # 1.20, below the chart's kubeVersion) is client-go's (v0.37 -> 1.37). Helm 4 reads it from
  # its build info.
  minor="$(cd "$mod" && go list -m -f '{{.Version}}' k8s.io/client-go | cut -d. -f2)"
  for pkg in pkg/lint/rules pkg/chartutil; do
    ldflags="$ldflags -X $module/$pkg.k8sVersionMajor=1 -X $module/$pkg.k8sVersionMinor=$minor"
  done
fi
start=$(date +%s)
(cd "$mod" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/helm" "$module/cmd/helm")
echo "$stamp" > "$out/.stamp"
echo "helm: built $version in $(( $(date +%s) - start )) s" >&2
echo "$out/helm"
