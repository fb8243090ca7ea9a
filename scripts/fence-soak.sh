#!/usr/bin/env bash
# Issue 19's soak: the fencing test's random pause points, RUNS times (default 30) from SEED
# (default 19), on one real control plane. Prints each run and the totals (runs, stale writes,
# takeover times); fails on the first stale write. Needs the control plane (testbed/build.sh;
# SPILLWAY_TESTBED_BIN may point at a built one).
set -euo pipefail
cd "$(dirname "$0")/.."
export SPILLWAY_FENCE_RUNS="${RUNS:-30}" SPILLWAY_FENCE_SEED="${SEED:-19}"
exec cargo test --test fencing random_pause_points -- --nocapture
