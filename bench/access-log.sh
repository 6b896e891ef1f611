#!/usr/bin/env bash
# The access log's cost: gw with its access log on (JSON, to a file) against gw with it off,
# interleaved over rounds, in the proxy benchmark's harness (issue 13's target: on / off >=
# 0.9). Needs neither nginx, HAProxy nor Caddy. Extra flags go to the driver, e.g.
#   bench/access-log.sh --rounds 2 --duration 2 --warmup 0.5 --label smoke
# Writes bench/results/proxy-<date>.md (the "Throughput gw with the access log" ratio).
source "$(dirname "$0")/common.sh"
# The fixed-rate phase needs a rate when nginx is not measured: 2,000 req/s is well below
# what one core of gw serves, so it measures latency, not saturation.
exec taskset -c 1 "$BIN/proxy" --bin-dir "$BIN" --skip direct,nginx,haproxy,caddy,gw-limiter \
    --keys 1 --rate 2000 "$@"
