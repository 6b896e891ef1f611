#!/usr/bin/env bash
# HTTPS through gw vs nginx, same certificate (ECDSA P-256), TLS 1.3, one worker each pinned to
# core 0, the load generator on core 1:
#   - keep-alive requests/s: wrk, 1 thread, 50 connections, GET /plain proxied to the bench
#     upstream (HTTP/1.1 keep-alive behind both);
#   - full handshakes/s: `openssl s_time -new` (a new connection and a full TLS 1.3 handshake
#     each time, no resumption).
# Rounds are interleaved (gw, nginx, gw, nginx, ...) and the median is reported.
#   bench/tls.sh [--rounds 3] [--duration 10]
# Writes bench/results/tls-<date>.md.
source "$(dirname "$0")/common.sh"
need nginx wrk openssl
rounds=3
duration=10
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --duration) duration="$2"; shift 2 ;;
        *) echo "usage: bench/tls.sh [--rounds N] [--duration SECONDS]" >&2; exit 2 ;;
    esac
done
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_https() {
    for _ in $(seq 1 400); do
        curl -sk -o /dev/null "https://127.0.0.1:$1/plain" && return 0
        sleep 0.05
    done
    echo "bench: nothing answers HTTPS on $1" >&2; exit 1
}

# One certificate for both: ECDSA P-256, SAN bench.test and 127.0.0.1.
openssl ecparam -name prime256v1 -genkey -noout -out "$work/key.pem"
openssl req -x509 -new -key "$work/key.pem" -subj "/CN=bench.test" -days 2 \
    -addext "subjectAltName=DNS:bench.test,IP:127.0.0.1" -out "$work/cert.pem" 2>/dev/null

up=$(free_port)
taskset -c 1 "$BIN/upstream" --listen "127.0.0.1:$up" >/dev/null 2>"$work/upstream.log" &
pids+=($!)

ngx=$(free_port)
mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  keepalive_requests 1000000;
  upstream up { server 127.0.0.1:$up; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$ngx ssl;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    ssl_protocols TLSv1.3;
    ssl_session_cache off;
    ssl_session_tickets off;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
taskset -c 0 nginx -p "$work/nginx" -e "$work/nginx/startup.log" -c "$work/nginx/nginx.conf" &
pids+=($!)

cp=$(free_port); gw=$(free_port); gwplain=$(free_port); admin=$(free_port)
"$BIN/gw-control-plane" --listen "127.0.0.1:$cp" --database "sqlite://$work/cp.db" \
    >"$work/cp.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 200); do (echo >/dev/tcp/127.0.0.1/$cp) 2>/dev/null && break; sleep 0.05; done
"$BIN/gwctl" --control-plane "http://127.0.0.1:$cp" service add plain --prefix /plain \
    --endpoint "http://127.0.0.1:$up" >/dev/null
"$BIN/gwctl" --control-plane "http://127.0.0.1:$cp" cert add bench \
    --cert "$work/cert.pem" --key "$work/key.pem" >/dev/null
taskset -c 0 "$BIN/gw-data-plane" --control-plane "http://127.0.0.1:$cp" \
    --listen "127.0.0.1:$gwplain" --tls-listen "127.0.0.1:$gw" --admin-listen "127.0.0.1:$admin" \
    --node-id bench --cache-file "$work/dp.cache" --worker-threads 1 >"$work/dp.log" 2>&1 &
pids+=($!)
wait_https "$ngx"
wait_https "$gw"

rps() {  # rps PORT -> requests/s
    taskset -c 1 wrk -t1 -c50 -d"${duration}s" "https://127.0.0.1:$1/plain" \
        | awk '/^Requests\/sec:/ {print $2}'
}
handshakes() {  # handshakes PORT -> full handshakes/s
    taskset -c 1 openssl s_time -connect "127.0.0.1:$1" -new -tls1_3 -time "$duration" 2>/dev/null \
        | awk '/connections in .* real seconds/ {print $1 / $4; exit}'
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

declare -A r
for i in $(seq 1 "$rounds"); do
    for t in gw nginx; do
        port=$([ $t = gw ] && echo "$gw" || echo "$ngx")
        r[$t.rps]+="$(rps "$port") "
        r[$t.hs]+="$(handshakes "$port") "
    done
    echo "round $i: rps gw ${r[gw.rps]}/ nginx ${r[nginx.rps]}; handshakes gw ${r[gw.hs]}/ nginx ${r[nginx.hs]}" >&2
done
med() { tr ' ' '\n' <<<"${r[$1]}" | grep -v '^$' | median; }
gw_rps=$(med gw.rps); ngx_rps=$(med nginx.rps); gw_hs=$(med gw.hs); ngx_hs=$(med nginx.hs)
mkdir -p bench/results
out="bench/results/tls-$(date -u +%Y%m%d-%H%M%S).md"
{
    echo "## HTTPS: gw vs nginx ($(date -u +%Y-%m-%d), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
    echo
    echo "Same ECDSA P-256 certificate, TLS 1.3, one worker each on core 0; load on core 1;"
    echo "$rounds interleaved rounds of ${duration}s, medians. $(nginx -v 2>&1); $(openssl version); wrk -t1 -c50."
    echo
    echo "| | gw | nginx | gw / nginx |"
    echo "|---|---|---|---|"
    awk -v a="$gw_rps" -v b="$ngx_rps" 'BEGIN {printf "| keep-alive requests/s | %.0f | %.0f | %.2f |\n", a, b, a/b}'
    awk -v a="$gw_hs" -v b="$ngx_hs" 'BEGIN {printf "| full handshakes/s (s_time -new) | %.0f | %.0f | %.2f |\n", a, b, a/b}'
} | tee "$out"
echo "written: $out" >&2
