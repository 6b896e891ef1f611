#!/usr/bin/env bash
# Proxy throughput and latency: direct vs nginx vs HAProxy vs Caddy vs gw (with and without a 100k-key
# limiter), interleaved over rounds. Extra flags go to the driver (see `--help`), e.g.
#   bench/proxy.sh --rounds 5 --duration 10
# Writes bench/results/proxy-<date>.md.
source "$(dirname "$0")/common.sh"
need nginx haproxy caddy
# The driver itself waits on core 1 with the load generator, off the proxies' core.
exec taskset -c 1 "$BIN/proxy" --bin-dir "$BIN" "$@"
