#!/usr/bin/env bash
# The Prometheus Operator module pinned in testbed/monitoring/go.mod: prints the folder of its
# CRDs (example/prometheus-operator-crd) on its last line, fetching the module once
# (testbed/fetch-module.sh; `--check` fetches nothing and fails unless it is in the cache).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec bash "$here/../fetch-module.sh" "$here" github.com/prometheus-operator/prometheus-operator \
  example/prometheus-operator-crd "the Prometheus Operator's CRDs" "$@"
