#!/usr/bin/env bash
# API-key authentication's cost: gw on a service that needs an API key (a valid one sent in
# X-API-Key) against the same gw process on the same kind of service without auth, interleaved
# over rounds, in the proxy benchmark's harness (issue 12's target: with / without >= 0.95).
# Needs neither nginx, HAProxy nor Caddy. Extra flags go to the driver, e.g.
#   bench/key-auth.sh --rounds 2 --duration 2 --warmup 0.5 --label smoke
# Writes bench/results/proxy-<date>.md (the "Throughput gw with key auth" ratio).
source "$(dirname "$0")/common.sh"
# The fixed-rate phase needs a rate when nginx is not measured: 2,000 req/s is well below
# what one core of gw serves, so it measures latency, not saturation.
exec taskset -c 1 "$BIN/proxy" --bin-dir "$BIN" --skip direct,nginx,haproxy,caddy,gw-log,gw-limiter \
    --keys 1 --rate 2000 "$@"
