#!/usr/bin/env bash
# Data-plane p99 while a config change arrives every 100 ms, against p99 with no changes.
# Extra flags go to the driver (see `--help`). Writes bench/results/pushes-<date>.md.
source "$(dirname "$0")/common.sh"
exec taskset -c 1 "$BIN/pushes" --bin-dir "$BIN" "$@"
