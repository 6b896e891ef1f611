#!/usr/bin/env bash
# API-key revocation on a fleet of real data planes: from DeleteApiKey returning to each node
# answering 401 to the key (and to ListNodes showing its ack). 100 nodes, 20 revocations by
# default. Extra flags go to the driver (see `--help`). Writes bench/results/revocation-<date>.md.
source "$(dirname "$0")/common.sh"
# The data planes run on core 0 (started by the driver); the driver, the control plane and the
# upstream on core 1.
exec taskset -c 1 "$BIN/revocation" --bin-dir "$BIN" "$@"
