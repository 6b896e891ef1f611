#!/usr/bin/env bash
# Instructions (and allocations) per proxied request, counted by callgrind: load-independent,
# so it can run on a busy machine. One gw-data-plane under valgrind on core 0; per route
# (/plain and /limited, the 100k-key limiter, by default; /keyed with --routes) and per
# load-generator connection count (4 and 32): warm-up, zero, N requests, dump, and an idle
# window of the same length whose cost is subtracted. Extra flags go to the driver, e.g.
#   bench/callgrind.sh --requests 5000 --top 20 --routes plain
# Writes bench/results/callgrind-<date>.md. Needs valgrind (callgrind_control, callgrind_annotate).
source "$(dirname "$0")/common.sh"
need valgrind callgrind_control callgrind_annotate
# The driver waits on core 1 with the load generator; the data plane runs on core 0.
exec taskset -c 1 "$BIN/callgrind" --bin-dir "$BIN" "$@"
