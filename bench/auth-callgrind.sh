#!/usr/bin/env bash
# Callgrind (load-independent): instructions per proxied request on /plain, /keyed (valid
# X-API-Key), /jwths and /jwtes (one token each, reused: verified-token cache hits), then the
# data plane's cost of receiving, applying and acking one-key revocations, each against an idle
# window of the same length. Needs valgrind, curl and python3 with `cryptography`.
# Env: N requests per route (5000), WARM (1000), REV revocations (10), W work dir (a new temp
# dir), CG_EXTRA extra valgrind flags (e.g. --toggle-collect='*auth::authenticate*').
# Writes callgrind dumps 1-4 (routes), then revoke/idle pairs, into $W; see RESULTS section 10b
# for how they were read (callgrind_annotate --inclusive=yes, totals / requests).
source "$(dirname "$0")/common.sh"
need valgrind callgrind_control curl python3
B="$BIN"
W=${W:-$(mktemp -d)}; mkdir -p "$W"
python3 bench/mint-jwt.py "$W"
echo "callgrind dumps in $W" >&2
N=${N:-5000}; WARM=${WARM:-1000}; REV=${REV:-10}
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
UP=$(port); CP=$(port); L=$(port); A=$(port)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
taskset -c 1 "$B/upstream" --listen 127.0.0.1:$UP >"$W/up.log" 2>&1 & pids+=($!)
taskset -c 1 "$B/gw-control-plane" --listen 127.0.0.1:$CP --database "sqlite://$W/cp.db" >"$W/cp.log" 2>&1 & pids+=($!)
G=("$B/gwctl" --control-plane "http://127.0.0.1:$CP")
until "${G[@]}" service list >/dev/null 2>&1; do sleep 0.2; done
for s in plain keyed jwths jwtes; do
  "${G[@]}" service add $s --prefix /$s --endpoint http://127.0.0.1:$UP >/dev/null
done
"${G[@]}" service update keyed --auth key >/dev/null
"${G[@]}" service update jwths --auth jwt >/dev/null
"${G[@]}" service update jwtes --auth jwt >/dev/null
"${G[@]}" consumer add bench >/dev/null
KEYJSON=$("${G[@]}" -o json consumer key add bench)
KEY=$(python3 -c 'import json,sys;print(json.loads(sys.argv[1])["key"])' "$KEYJSON")
"${G[@]}" consumer jwt add bench --issuer hs-issuer --secret-file "$W/hs.secret" >/dev/null
"${G[@]}" consumer jwt add bench --issuer es-issuer --public-key-file "$W/es.pub" >/dev/null
HS=$(cat "$W/hs.token"); ES=$(cat "$W/es.token")
taskset -c 0 valgrind --tool=callgrind ${CG_EXTRA:-} --callgrind-out-file="$W/cg.out" "$B/gw-data-plane" \
  --control-plane "http://127.0.0.1:$CP" --listen 127.0.0.1:$L --admin-listen 127.0.0.1:$A \
  --node-id cg --cache-file "$W/cg.cache" --worker-threads 1 --access-log off >"$W/dp.log" 2>&1 & DP=$!; pids+=($DP)
code() { curl -s -o /dev/null -w '%{http_code}' "$@" || true; }
until [ "$(code http://127.0.0.1:$L/keyed -H "X-API-Key: $KEY")" = 200 ] && [ "$(code http://127.0.0.1:$L/jwtes -H "Authorization: Bearer $ES")" = 200 ]; do sleep 0.5; done
hdr() { case $1 in keyed) echo "X-API-Key: $KEY";; jwths) echo "Authorization: Bearer $HS";; jwtes) echo "Authorization: Bearer $ES";; *) echo "X-API-Key: $KEY";; esac; }
for r in plain keyed jwths jwtes; do
  [ "$(code http://127.0.0.1:$L/$r -H "$(hdr $r)")" = 200 ] || { echo "route $r not 200"; exit 1; }
done
for r in keyed jwths jwtes; do
  [ "$(code http://127.0.0.1:$L/$r)" = 401 ] || { echo "/$r without a credential is not 401"; exit 1; }
done
lg() { taskset -c 1 "$B/loadgen" --url "http://127.0.0.1:$L/$1" -c 4 --requests "$2" --header "$(hdr $1)" >>"$W/loadgen-$1.log" 2>&1; }
for r in plain keyed jwths jwtes; do lg $r $WARM; done
for r in plain keyed jwths jwtes; do
  callgrind_control -z $DP >/dev/null
  lg $r $N
  callgrind_control -d "$r" $DP >/dev/null
  echo "$r done"
done
# Revocations: keys created outside the window; then zero, revoke one, wait for the node's
# ack in the control plane's node list (no request reaches the data plane), dump; and an idle
# window of the same length as a baseline (timers, health checks).
node_acked() { "${G[@]}" -o json nodes | python3 -c '
import json,sys
d=json.load(sys.stdin)
n=[x for x in d["nodes"] if x.get("node_id", x.get("id"))=="cg"][0]
print(n["acked_version"], d["config_version"])'; }
wait_acked() { while :; do read a c < <(node_acked); [ "$a" = "$c" ] && break; sleep 0.05; done; }
IDS=()
for i in $(seq 1 $REV); do
  J=$("${G[@]}" -o json consumer key add bench)
  IDS+=("$(python3 -c 'import json,sys;j=json.loads(sys.argv[1]);print(j.get("id") or j["api_key"]["id"])' "$J")")
done
wait_acked; sleep 1
for i in $(seq 1 $REV); do
  callgrind_control -z $DP >/dev/null
  t0=$(date +%s.%N)
  "${G[@]}" key rm "${IDS[$((i-1))]}" >/dev/null
  wait_acked
  t1=$(date +%s.%N)
  callgrind_control -d "revoke$i" $DP >/dev/null
  callgrind_control -z $DP >/dev/null
  sleep "$(python3 -c "print($t1-$t0)")"
  callgrind_control -d "idle$i" $DP >/dev/null
done
echo "revocations done"
ls "$W"
