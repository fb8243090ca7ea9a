#!/usr/bin/env bash
# Builds helm (helm.sh/helm/v3, pinned in testbed/helm/go.mod) into target/helm/bin for CI's
# `helm lint` and `helm template`. Reuses the binary until go.mod or go.sum changes. Prints the
# binary's path on its last line.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${SPILLWAY_HELM_BIN:-$root/target/helm/bin}"
mkdir -p "$out"

stamp="$(cat "$here/go.mod" "$here/go.sum" "$0" | sha256sum | cut -c1-16)"
if [ -x "$out/helm" ] && [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$stamp" ]; then
  echo "$out/helm"
  exit 0
fi

version="$(cd "$here" && go list -m -f '{{.Version}}' helm.sh/helm/v3)"
start=$(date +%s)
(cd "$here" && CGO_ENABLED=0 go build -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$version" \
  -o "$out/helm" helm.sh/helm/v3/cmd/helm)
echo "$stamp" > "$out/.stamp"
echo "helm: built $version in $(( $(date +%s) - start )) s" >&2
echo "$out/helm"
