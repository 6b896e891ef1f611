#!/usr/bin/env bash
# Config propagation: 10,000 services, 100 simulated data-plane streams, 50 single-service
# changes. Extra flags go to the driver (see `--help`). Writes bench/results/propagation-<date>.md.
source "$(dirname "$0")/common.sh"
# The control plane runs on core 0 (started by the driver); the simulated fleet on core 1.
exec taskset -c 1 "$BIN/propagation" --bin-dir "$BIN" "$@"
