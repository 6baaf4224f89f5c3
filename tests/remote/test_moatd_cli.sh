#!/usr/bin/env bash
# moatd's command line: --help, --version, bad options, start-up output,
# identity key kept across restarts, clean exit on SIGINT and SIGTERM.
set -u
moatd=$1
dir=$(mktemp -d "${TMPDIR:-/tmp}/moat-cli-XXXXXX")
fail() { echo "FAIL: $*"; rm -rf "$dir"; exit 1; }

"$moatd" --version | grep -q '^moatd [0-9]' || fail "--version"
"$moatd" --help | grep -q -- '--listen ADDR' || fail "--help"
"$moatd" --bogus 2>/dev/null; [ $? -eq 2 ] || fail "unknown option must exit 2"
"$moatd" --listen 127.0.0.1:0 --max-sessions x 2>/dev/null; [ $? -eq 2 ] || fail "bad number must exit 2"
"$moatd" 2>/dev/null; [ $? -eq 2 ] || fail "missing --listen must exit 2"
"$moatd" --listen=127.0.0.1:0 --max-sessions=x 2>/dev/null; [ $? -eq 2 ] || fail "bad --opt=value must exit 2"
"$moatd" --listen 127.0.0.1:0 --max-nesting 0 2>/dev/null; [ $? -eq 2 ] || fail "--max-nesting 0 must exit 2"
"$moatd" --listen 2>/dev/null; [ $? -eq 2 ] || fail "missing value must exit 2"
"$moatd" --listen 127.0.0.1:0 stray 2>/dev/null; [ $? -eq 2 ] || fail "stray argument must exit 2"
for opt in --listen --tls-cert --tls-key --tls-client-ca --enclave-dir --allow-upload --backend --max-sessions \
           --max-threads-per-session --max-nesting --max-message-bytes --max-image-bytes --session-grace-ms \
           --shutdown-timeout --state-dir --ready-file --log-level --version; do
  "$moatd" --help | grep -q -- "$opt" || fail "--help does not list $opt"
done
"$moatd" --help | grep -q -- '--max-nesting N.*' || fail "--help: --max-nesting"
"$moatd" --help | grep -q -- '(default 1024)' || fail "--help: the --max-nesting default"

start() { # start SIGNAL: run moatd, check its output, stop it with SIGNAL
  # Both option forms: --opt value and --opt=value.
  "$moatd" --listen=127.0.0.1:0 --state-dir "$dir/state" --ready-file="$dir/ready" >"$dir/out" 2>"$dir/err" &
  pid=$!
  for _ in $(seq 1 200); do [ -s "$dir/ready" ] && break; sleep 0.05; done
  [ -s "$dir/ready" ] || { kill "$pid"; wait "$pid"; fail "no ready file"; }
  sleep 0.1
  [ "$(cat "$dir/out")" = "$(cat "$dir/ready")" ] || fail "stdout and ready file differ"
  grep -Eq '^127\.0\.0\.1:[0-9]+$' "$dir/ready" || fail "bad address $(cat "$dir/ready")"
  key=$(grep -o 'ed25519:[0-9a-f]\{64\}' "$dir/err") || fail "no identity key line"
  kill -"$1" "$pid"
  wait "$pid"
  rc=$?
  [ $rc -eq 0 ] || fail "exit status $rc after SIG$1"
  [ ! -e "$dir/ready" ] || fail "ready file left behind"
}
start INT
first=$key
[ "$(stat -c %a "$dir/state/identity.pem")" = 600 ] || fail "identity key not 0600"
start TERM
[ "$key" = "$first" ] || fail "identity key changed across restarts"
rm -rf "$dir"
echo "moatd cli ok"
