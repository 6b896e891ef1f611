# Sourced by the bench/*.sh scripts: go to the workspace root, check the tools, build the
# release binaries, and say where they are. Not meant to be run on its own.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

need() {
    for tool in "$@"; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            echo "bench: '$tool' not found; see bench/README.md (apt-get install -y nginx haproxy caddy wrk util-linux)" >&2
            exit 1
        fi
    done
}

if [ "$(nproc)" -lt 2 ]; then
    echo "bench: needs at least 2 cores (proxy on core 0, load generator on core 1)" >&2
    exit 1
fi

need cargo taskset
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release -p gw-bench -p gw-data-plane -p gw-control-plane -p gwctl >&2
BIN="$TARGET_DIR/release"
