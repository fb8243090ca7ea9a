#!/usr/bin/env bash
# The end-to-end test, run by hand: the test bed's real control plane, Envoy stand-ins, a real
# Prometheus and two real `spillway run` replicas through a 10x flash crowd (about 5 minutes).
# Usage: scripts/e2e.sh [DIR]   (DIR keeps the story, both agents' logs, prometheus.yml, the TSDB,
# the control plane's logs and audit log; default target/e2e). Needs prometheus
# (apt-get install prometheus) and the test bed (bash testbed/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-target/e2e}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
echo "--- files in $dir (story: $dir/e2e-story.log)"
SPILLWAY_E2E_DIR="$dir" cargo test --locked --test e2e -- --nocapture
