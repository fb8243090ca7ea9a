#!/usr/bin/env bash
# Fetches the Prometheus Operator module pinned in testbed/monitoring/go.mod (its source, from
# the Go module proxy, checked against go.sum; nothing is built) and prints the folder of its CRDs
# (example/prometheus-operator-crd) on its last line. `--check` fetches nothing: it prints the
# folder if the module is in the cache and fails otherwise.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
mod=github.com/prometheus-operator/prometheus-operator
cd "$here"
if [ "${1:-}" = "--check" ]; then
  dir="$(GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' "$mod" 2>/dev/null || true)"
  if [ -z "$dir" ] || [ ! -d "$dir/example/prometheus-operator-crd" ]; then
    echo "the Prometheus Operator's CRDs are not fetched: run bash testbed/monitoring/crds.sh" >&2
    exit 1
  fi
else
  dir="$(go mod download -json "$mod" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
fi
echo "$dir/example/prometheus-operator-crd"
