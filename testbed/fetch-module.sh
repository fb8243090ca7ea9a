#!/usr/bin/env bash
# Fetches a Go module pinned in DIR/go.mod (its source, from the Go module proxy, checked against
# go.sum; nothing is built) and prints DIR-of-the-module/SUBPATH on its last line. With --check it
# fetches nothing: it prints the path if the module is in the cache and fails otherwise.
# Usage: fetch-module.sh DIR MODULE SUBPATH WHAT [--check]
set -euo pipefail
dir="$1" mod="$2" sub="$3" what="$4"
cd "$dir"
if [ "${5:-}" = "--check" ]; then
  found="$(GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' "$mod" 2>/dev/null || true)"
  if [ -z "$found" ] || [ ! -e "$found/$sub" ]; then
    echo "$what are not fetched: run bash ${dir#"$(cd "$dir/../.." && pwd)/"}/crds.sh" >&2
    exit 1
  fi
else
  found="$(go mod download -json "$mod" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
fi
echo "$found/$sub"
