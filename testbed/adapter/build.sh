#!/usr/bin/env bash
# Builds prometheus-adapter (sigs.k8s.io/prometheus-adapter, pinned in testbed/adapter/go.mod)
# into target/adapter/bin for tests/hpa.rs, which registers it with the test bed's apiserver
# (APIService external.metrics.k8s.io) so that the real HPA reads the gateway's request rate from
# the test's real Prometheus. Reuses the binary until go.mod, go.sum or this script changes.
# `--check` builds nothing: it prints the binary's path if it is current and fails otherwise.
# Prints the binary's path on its last line.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${SPILLWAY_ADAPTER_BIN:-$root/target/adapter/bin}"

stamp="$(cat "$here/go.mod" "$here/go.sum" "$0" | sha256sum | cut -c1-16)"
if [ -x "$out/adapter" ] && [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$stamp" ]; then
  echo "$out/adapter"
  exit 0
fi
if [ "${1:-}" = "--check" ]; then
  echo "prometheus-adapter is not built or is stale in $out: run bash testbed/adapter/build.sh" >&2
  exit 1
fi

mkdir -p "$out"
start=$(date +%s)
(cd "$here" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" \
  -o "$out/adapter" sigs.k8s.io/prometheus-adapter/cmd/adapter)
echo "$stamp" > "$out/.stamp"
echo "prometheus-adapter: built $(cd "$here" && go list -m -f '{{.Version}}' sigs.k8s.io/prometheus-adapter) in $(( $(date +%s) - start )) s" >&2
echo "$out/adapter"
