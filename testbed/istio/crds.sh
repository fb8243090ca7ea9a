#!/usr/bin/env bash
# The istio.io/api module pinned in testbed/istio/go.mod: prints the path of its CRDs
# (kubernetes/customresourcedefinitions.gen.yaml) on its last line, fetching the module once
# (testbed/fetch-module.sh; `--check` fetches nothing and fails unless it is in the cache).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec bash "$here/../fetch-module.sh" "$here" istio.io/api \
  kubernetes/customresourcedefinitions.gen.yaml "Istio's CRDs" "$@"
