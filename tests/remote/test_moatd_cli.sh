#!/usr/bin/env bash
# moatd's command line: --help, --version, bad options, start-up output,
# identity key kept across restarts, clean exit on SIGINT and SIGTERM;
# --allow-upload refused on a plaintext listener others can reach, the state
# directory's owner and mode, a unix: listener's socket mode whatever the umask;
# `moat status` against it.
set -u
moatd=$1
moat=${2:-}
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
  [ "$(cat "$dir/out")" = "grpc://$(cat "$dir/ready")" ] || fail "stdout is not the URI of the ready file's address"
  grep -Eq '^127\.0\.0\.1:[0-9]+$' "$dir/ready" || fail "bad address $(cat "$dir/ready")"
  key=$(grep -o 'ed25519:[0-9a-f]\{64\}' "$dir/err") || fail "no identity key line"
  # moat status asks the target what it says of itself (moat.v1.Target/Status).
  if [ -n "$moat" ]; then
    "$moat" status "grpc://$(cat "$dir/ready")" >"$dir/status" || fail "moat status failed"
    grep -q '^serving:  yes$' "$dir/status" || fail "moat status: not serving: $(cat "$dir/status")"
    grep -q '^sessions: 0 of 64$' "$dir/status" || fail "moat status: sessions"
    grep -q '^moatd_sessions 0$' "$dir/status" || fail "moat status: no metrics"
    "$moat" status grpc://127.0.0.1:1 2>/dev/null && fail "moat status of nothing must fail"
  fi
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

for opt in --max-store-bytes --max-uploads --insecure-upload --socket-mode; do
  "$moatd" --help | grep -q -- "$opt" || fail "--help does not list $opt"
done
"$moatd" --listen 127.0.0.1:0 --max-uploads 0 2>/dev/null; [ $? -eq 2 ] || fail "--max-uploads 0 must exit 2"
"$moatd" --listen 127.0.0.1:0 --max-store-bytes 0 2>/dev/null; [ $? -eq 2 ] || fail "--max-store-bytes 0 must exit 2"
"$moatd" --listen 127.0.0.1:0 --socket-mode 0999 2>/dev/null; [ $? -eq 2 ] || fail "bad --socket-mode must exit 2"

# Start-up: the URI a host uses on stdout, a warning when nothing can be served, the default state
# directory ($STATE_DIRECTORY under systemd; $XDG_STATE_HOME/moatd when not root).
sd() { # sd VAR=VALUE... MOATD ARGS...: run moatd until it serves, then stop it; stdout in $dir/out, stderr in $dir/err
  env "$@" --ready-file "$dir/sd-ready" >"$dir/out" 2>"$dir/err" &
  pid=$!
  for _ in $(seq 1 200); do [ -s "$dir/sd-ready" ] && break; sleep 0.05; done
  [ -s "$dir/sd-ready" ] || { kill "$pid"; wait "$pid"; fail "moatd did not serve: $(cat "$dir/err")"; }
  kill -TERM "$pid"
  wait "$pid" || fail "exit status $? after SIGTERM"
}
mkdir -m 700 "$dir/sd"
sd STATE_DIRECTORY="$dir/sd/state" "$moatd" --listen "unix:$dir/sd/sock"
[ "$(cat "$dir/out")" = "unix:$dir/sd/sock" ] || fail "unix: listener announced as $(cat "$dir/out")"
[ -f "$dir/sd/state/identity.pem" ] || fail "\$STATE_DIRECTORY was not the state directory"
grep -q 'nothing can be served' "$dir/err" || fail "no warning without --enclave-dir or --allow-upload"
sd STATE_DIRECTORY="$dir/sd/state" "$moatd" --listen "unix:$dir/sd/sock" --enclave-dir "$dir/sd/none" --log-level info
grep -q "enclave-dir $dir/sd/none: No such file" "$dir/err" || fail "no warning for a missing --enclave-dir"
sd STATE_DIRECTORY="$dir/sd/state" "$moatd" --listen "unix:$dir/sd/sock" --enclave-dir "$dir/sd"
! grep -q 'served\|enclave-dir' "$dir/err" || fail "a warning with an enclave directory: $(cat "$dir/err")"
if [ "$(id -u)" != 0 ]; then
  sd XDG_STATE_HOME="$dir/xdg" "$moatd" --listen 127.0.0.1:0 --allow-upload
  [ -f "$dir/xdg/moatd/identity.pem" ] || fail "\$XDG_STATE_HOME/moatd was not the state directory"
fi

# --allow-upload on a plaintext listener others can reach needs --insecure-upload (checked before binding).
"$moatd" --listen 0.0.0.0:0 --state-dir "$dir/up" --allow-upload 2>"$dir/err"
[ $? -eq 2 ] || fail "--allow-upload on 0.0.0.0 without --insecure-upload must exit 2"
grep -q -- '--insecure-upload' "$dir/err" || fail "the refusal does not name --insecure-upload: $(cat "$dir/err")"
# With it, moatd goes on (192.0.2.1, TEST-NET-1, is no address of this machine: the bind fails after the check).
"$moatd" --listen 192.0.2.1:0 --state-dir "$dir/up" --allow-upload --insecure-upload --log-level error \
  2>"$dir/err" >/dev/null
rc=$?
[ $rc -ne 0 ] && [ $rc -ne 2 ] || fail "--insecure-upload: exit status $rc"
! grep -q -- '--insecure-upload' "$dir/err" || fail "--insecure-upload was not taken"

serve() { # serve DIR [ARGS...]: start moatd on a unix socket in DIR (state DIR/state), wait until it serves
  sdir=$1
  shift
  rm -f "$sdir/ready"
  "$moatd" --listen "unix:$sdir/sock" --state-dir "$sdir/state" --ready-file "$sdir/ready" "$@" \
    >/dev/null 2>"$sdir/err" &
  pid=$!
  for _ in $(seq 1 200); do [ -s "$sdir/ready" ] && break; sleep 0.05; done
  [ -s "$sdir/ready" ] || { kill "$pid" 2>/dev/null; wait "$pid"; fail "moatd did not serve: $(cat "$sdir/err")"; }
}
stop() {
  kill -TERM "$pid"
  wait "$pid" || fail "exit status $? after SIGTERM"
}

# The socket file's mode is --socket-mode (default 0600), whatever moatd's umask.
mkdir -m 700 "$dir/u"
(umask 000; serve "$dir/u"; [ "$(stat -c %a "$dir/u/sock")" = 600 ] || fail "socket mode $(stat -c %a "$dir/u/sock") with umask 000"; stop)
[ $? -eq 0 ] || exit 1
(umask 000; serve "$dir/u" --socket-mode 0660; [ "$(stat -c %a "$dir/u/sock")" = 660 ] || fail "--socket-mode 0660 gave $(stat -c %a "$dir/u/sock")"; stop)
[ $? -eq 0 ] || exit 1
# moatd's state directory is made 0700 even with umask 000.
[ "$(stat -c %a "$dir/u/state")" = 700 ] || fail "state directory made $(stat -c %a "$dir/u/state") with umask 000"

# A state directory others may write is refused; one they may only read is made 0700, saying so.
mkdir -m 700 "$dir/s" "$dir/s/state"
chmod 777 "$dir/s/state"
"$moatd" --listen "unix:$dir/s/sock" --state-dir "$dir/s/state" 2>"$dir/err" >/dev/null
[ $? -ne 0 ] || fail "a world-writable state directory must be refused"
grep -q 'writable by others' "$dir/err" || fail "no reason given: $(cat "$dir/err")"
[ ! -e "$dir/s/state/identity.pem" ] || fail "a key was made in a refused state directory"
chmod 750 "$dir/s/state"
serve "$dir/s"
stop
[ "$(stat -c %a "$dir/s/state")" = 700 ] || fail "state directory left at $(stat -c %a "$dir/s/state")"
grep -q 'made it 0700' "$dir/s/err" || fail "moatd did not say it fixed the mode: $(cat "$dir/s/err")"
# One owned by another user is refused (this needs root to set up).
if [ "$(id -u)" = 0 ]; then
  mkdir -m 700 "$dir/o"
  chown 65534 "$dir/o"
  "$moatd" --listen "unix:$dir/s/sock" --state-dir "$dir/o" 2>"$dir/err" >/dev/null
  [ $? -ne 0 ] || fail "a state directory of another user must be refused"
  grep -q 'belongs to uid 65534' "$dir/err" || fail "no reason given: $(cat "$dir/err")"
fi

rm -rf "$dir"
echo "moatd cli ok"
