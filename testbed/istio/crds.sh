#!/usr/bin/env bash
# Fetches the istio.io/api module pinned in testbed/istio/go.mod (its source, from the Go module
# proxy, checked against go.sum; nothing is built) and prints the path of its CRDs
# (kubernetes/customresourcedefinitions.gen.yaml) on its last line. `--check` fetches nothing: it
# prints the path if the module is in the cache and fails otherwise.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
mod=istio.io/api
cd "$here"
if [ "${1:-}" = "--check" ]; then
  dir="$(GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' "$mod" 2>/dev/null || true)"
  if [ -z "$dir" ] || [ ! -f "$dir/kubernetes/customresourcedefinitions.gen.yaml" ]; then
    echo "Istio's CRDs are not fetched: run bash testbed/istio/crds.sh" >&2
    exit 1
  fi
else
  dir="$(go mod download -json "$mod" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
fi
echo "$dir/kubernetes/customresourcedefinitions.gen.yaml"
