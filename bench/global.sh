#!/usr/bin/env bash
# GLOBAL rate limits counted in Redis (issue 11): exactness, accuracy at rate, cost, faults.
# Extra flags go to the driver (see `--help`), e.g.
#   bench/global.sh --accuracy-secs 30
#   bench/global.sh --parts exact,cheap --duration 2 --label smoke
# Writes bench/results/global-<date>.md.
source "$(dirname "$0")/common.sh"
need redis-server redis-cli
# The driver waits on core 1 with the load generator and Redis, off the data planes' core.
exec taskset -c 1 "$BIN/global" --bin-dir "$BIN" "$@"
