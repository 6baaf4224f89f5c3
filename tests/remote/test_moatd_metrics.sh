#!/usr/bin/env bash
# moatd --metrics-listen: Prometheus text on GET /metrics (fetched with bash's /dev/tcp, no client
# needed) counting calls, entry calls and their latency histogram, refusals by reason, the connections
# the server itself refused (--max-connections), the limits;
# and --log-level debug logging every call, session event and refusal.
set -u
moatd=$1 moat=$2 enclaves=$3
dir=$(mktemp -d "${TMPDIR:-/tmp}/moat-metrics-XXXXXX")
pid=
fail() {
  echo "FAIL: $*"
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid"
  rm -rf "$dir"
  exit 1
}
# get PORT PATH: the HTTP response (status line, headers, body) into $dir/resp.
get() {
  exec 3<>"/dev/tcp/127.0.0.1/$1" || fail "cannot connect to port $1"
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
  tr -d '\r' <&3 >"$dir/resp"
  exec 3<&-
}
value() { sed -n "s/^$1 \([0-9.e+-]*\)$/\1/p" "$dir/resp"; }

"$moatd" --listen "unix:$dir/sock" --state-dir "$dir/state" --ready-file "$dir/ready" --enclave-dir "$enclaves" \
  --metrics-listen 127.0.0.1:0 --max-sessions 5 --max-connections 2 --log-level debug >"$dir/out" 2>"$dir/err" &
pid=$!
for _ in $(seq 1 200); do [ -s "$dir/ready" ] && break; kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
[ -s "$dir/ready" ] || fail "moatd did not serve: $(cat "$dir/err")"
port=$(sed -n 's|.*metrics on http://127.0.0.1:\([0-9]*\)/metrics$|\1|p' "$dir/err")
[ -n "$port" ] || fail "no 'metrics on' line: $(cat "$dir/err")"

get "$port" /metrics
head -n 1 "$dir/resp" | grep -q '^HTTP/1.[01] 200' || fail "GET /metrics: $(head -n 1 "$dir/resp")"
grep -qi '^content-type: text/plain; version=0.0.4' "$dir/resp" || fail "not the Prometheus text format"
[ "$(value 'moatd_sessions')" = 0 ] || fail "sessions before any Load"
[ "$(value 'moatd_limit{name="max_sessions"}')" = 5 ] || fail "the max_sessions limit"
for reason in connection descriptors pending calls parked request_timeout thread; do
  [ "$(value "moatd_server_refusals_total{reason=\"$reason\"}")" = 0 ] || fail "server refusals ($reason) before any"
done

# Two entry calls by name (ok), one Load of a name that is not there (refused: ENOENT).
for who in a b; do
  [ "$("$moat" run --backend "unix:$dir/sock" --by-name hello_enclave "$who")" = "Hello, $who!" ] || fail "moat run"
done
"$moat" run --backend "unix:$dir/sock" --by-name no_such_enclave x 2>/dev/null && fail "a missing image loaded"
get "$port" /metrics
[ "$(value 'moatd_calls_total{method="Load"}')" = 3 ] || fail "Load calls: $(grep calls_total "$dir/resp")"
[ "$(value 'moatd_entry_call_seconds_count{result="ok"}')" = 2 ] || fail "ok entry calls: $(grep seconds_count "$dir/resp")"
[ "$(value 'moatd_entry_call_seconds_bucket{result="ok",le="+Inf"}')" = 2 ] || fail "the +Inf bucket"
[ "$(value 'moatd_refusals_total{reason="ENOENT"}')" = 1 ] || fail "ENOENT refusals: $(grep refusals "$dir/resp")"
[ "$(value 'moatd_entry_bytes_in_total')" = 2 ] || fail "bytes in: $(grep bytes_in "$dir/resp")"
[ "$(value 'moatd_entry_bytes_out_total')" -gt 0 ] || fail "bytes out"
# Cumulative buckets never decrease.
grep '^moatd_entry_call_seconds_bucket{result="ok"' "$dir/resp" | awk '{ if ($2 < last) exit 1; last = $2 }' ||
  fail "buckets are not cumulative"
for line in 'debug: call /moat.v1.Target/Load' 'debug: session [0-9a-f]*: a host thread attached (1 now)' \
            'debug: session [0-9a-f]*: a host thread detached (0 left)' 'debug: session [0-9a-f]*: lease opened' \
            'info: session [0-9a-f]*: loaded ' 'info: session [0-9a-f]*: destroyed by the host' \
            'info: /moat.v1.Target/Load refused: '; do
  grep -q "$line" "$dir/err" || fail "the debug log has no '$line': $(cat "$dir/err")"
done
# Three connections at once where two are allowed: the server closes the third on arrival and counts it.
python3 - "$dir/sock" <<'PY' || fail "could not hold connections open"
import socket, sys, time
held = []
for _ in range(3):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    held.append(s)
    time.sleep(0.2)
for s in held:
    s.close()
PY
for _ in $(seq 1 100); do grep -q 'refused a connection' "$dir/err" && break; sleep 0.05; done
get "$port" /metrics
# (At least one: a connection of an earlier moat run that the server has not closed yet would count too.)
[ "$(value 'moatd_server_refusals_total{reason="connection"}')" -ge 1 ] 2>/dev/null ||
  fail "connection refusals: $(grep server_refusals "$dir/resp"); log: $(grep 'server:' "$dir/err")"
kill -HUP "$pid"
for _ in $(seq 1 100); do grep -q 'reloaded (SIGHUP)' "$dir/err" && break; sleep 0.05; done
get "$port" /metrics
[ "$(value 'moatd_reloads_total')" = 1 ] || fail "reloads"
get "$port" /other
head -n 1 "$dir/resp" | grep -q ' 404' || fail "GET /other: $(head -n 1 "$dir/resp")"

kill -TERM "$pid"
wait "$pid" || fail "exit status $? after SIGTERM"
pid=
# A port that cannot be had is an error at start-up.
"$moatd" --listen "unix:$dir/sock" --state-dir "$dir/state" --metrics-listen 192.0.2.1:9 2>"$dir/err" >/dev/null
[ $? -ne 0 ] && grep -q 'metrics-listen' "$dir/err" || fail "a bad --metrics-listen: $(cat "$dir/err")"
rm -rf "$dir"
echo "moatd metrics ok"
