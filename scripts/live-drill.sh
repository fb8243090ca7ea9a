#!/usr/bin/env bash
# spillway beside the real HPA on the test bed's real control plane (tests/hpa.rs): one load,
# two copies of the gateway on twin pools, the real HPA (kube-controller-manager, External metric
# through upstream's prometheus-adapter) scaling one, `spillway run` the other; a flash crowd, a
# sawtooth and a slow ramp, time-compressed (about 15 minutes in all). Prints, per profile, a
# table per fleet beside the drill simulator's prediction, and keeps each run's files.
# Usage: scripts/live-drill.sh [DIR] [PROFILE...]   PROFILE: flash_crowd, sawtooth, slow_ramp
# (default all three); DIR defaults to target/live-drill. Needs prometheus
# (apt-get install prometheus), the test bed (bash testbed/build.sh) and the adapter
# (bash testbed/adapter/build.sh). CI runs the flash crowd alone, as part of `cargo test`.
# The scale-down windows are compressed tenfold like the load (30 s; spillway's ECI window 4 s);
# SPILLWAY_LIVE_DRILL_WINDOWS=real keeps the defaults (300 s; ECI 40 s) for a longer run.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-target/live-drill}"
shift || true
profiles=("$@")
[ ${#profiles[@]} -gt 0 ] || profiles=(flash_crowd sawtooth slow_ramp)
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
bash testbed/adapter/build.sh >/dev/null
for p in "${profiles[@]}"; do
  echo "--- $p (files in $dir)"
  SPILLWAY_TEST_KEEP="$dir" cargo test --locked --test hpa -- --include-ignored --exact \
    "${p}_beside_the_real_hpa" --nocapture
done
echo "--- tables"
cat "$dir"/hpa-*/table.md
