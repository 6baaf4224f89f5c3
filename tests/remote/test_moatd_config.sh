#!/usr/bin/env bash
# moatd's --config file (keys as the options, the command line wins, errors named), its log forms
# (text with UTC time and level, the journal's "<priority>" form when stderr is $JOURNAL_STREAM,
# --log-format json) and what SIGHUP logs.
set -u
moatd=$1
dir=$(mktemp -d "${TMPDIR:-/tmp}/moat-conf-XXXXXX")
pid=
fail() {
  echo "FAIL: $*"
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid"
  rm -rf "$dir"
  exit 1
}
mkdir -m 700 "$dir/enc"

# serve ARGS...: start moatd on a unix socket with ARGS, wait until it serves (stderr in $dir/err).
serve() {
  rm -f "$dir/ready"
  "$moatd" --listen "unix:$dir/sock" --state-dir "$dir/state" --ready-file "$dir/ready" "$@" >"$dir/out" 2>"$dir/err" &
  pid=$!
  for _ in $(seq 1 200); do [ -s "$dir/ready" ] && return 0; kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  fail "moatd did not serve: $(cat "$dir/err")"
}
stop() {
  kill -TERM "$pid"
  wait "$pid" || fail "exit status $? after SIGTERM"
  pid=
}

# Keys, comments, a [moatd] section, flags as words; the command line wins over the file.
cat >"$dir/moatd.conf" <<EOF
# moatd's configuration
enclave-dir = $dir/enc   ; names hosts may load
[moatd]
log-level = debug
allow-upload = yes
max-sessions = 7
EOF
serve --config "$dir/moatd.conf" --log-level info
grep -q 'serving on unix:' "$dir/err" || fail "no info line: $(cat "$dir/err")"
grep -q ' debug: ' "$dir/err" && fail "--log-level info on the command line did not win over the file"
grep -q 'nothing can be served' "$dir/err" && fail "the file's enclave-dir was not taken"
grep -Eq '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z moatd\[[0-9]+\] info: ' "$dir/err" ||
  fail "text lines have no UTC time, PID and level: $(head -n 1 "$dir/err")"

# SIGHUP: the file is read again; what changed is logged, what needs a restart is named.
sed -i 's/^max-sessions = 7/max-sessions = 9/' "$dir/moatd.conf"
mkdir -m 700 "$dir/enc2"
sed -i "s|^enclave-dir = .*|enclave-dir = $dir/enc2|" "$dir/moatd.conf"
kill -HUP "$pid"
for _ in $(seq 1 100); do grep -q 'reloaded (SIGHUP)' "$dir/err" && break; sleep 0.05; done
grep -q "reloaded (SIGHUP): enclave directory $dir/enc -> $dir/enc2; 0 sessions kept" "$dir/err" ||
  fail "no reload line: $(cat "$dir/err")"
grep -q 'need a restart and were not applied: --max-sessions' "$dir/err" || fail "--max-sessions not named"
kill -0 "$pid" || fail "moatd died on SIGHUP"
# A file that no longer parses changes nothing.
echo "bogus-key = 1" >>"$dir/moatd.conf"
kill -HUP "$pid"
for _ in $(seq 1 100); do grep -q 'nothing changed' "$dir/err" && break; sleep 0.05; done
grep -q "unknown key 'bogus-key'" "$dir/err" || fail "the bad key was not named on reload"
grep -q 'has errors (above); nothing changed' "$dir/err" || fail "a bad file on reload: $(cat "$dir/err")"
stop
[ ! -e "$dir/ready" ] || fail "ready file left behind"

# Errors in the file: exit 2, naming the key, the value or the line.
printf 'bogus-key = 1\n' >"$dir/bad.conf"
"$moatd" --listen "unix:$dir/sock" --config "$dir/bad.conf" 2>"$dir/err" >/dev/null
[ $? -eq 2 ] || fail "an unknown key must exit 2"
grep -q "unknown key 'bogus-key'" "$dir/err" || fail "unknown key not named: $(cat "$dir/err")"
printf 'max-sessions = lots\n' >"$dir/bad.conf"
"$moatd" --listen "unix:$dir/sock" --config "$dir/bad.conf" 2>"$dir/err" >/dev/null
[ $? -eq 2 ] && grep -q "bad value 'lots' for max-sessions" "$dir/err" || fail "bad value: $(cat "$dir/err")"
printf 'allow-upload = maybe\n' >"$dir/bad.conf"
"$moatd" --listen "unix:$dir/sock" --config "$dir/bad.conf" 2>/dev/null >/dev/null
[ $? -eq 2 ] || fail "a flag must be true or false"
printf 'just words\n' >"$dir/bad.conf"
"$moatd" --listen "unix:$dir/sock" --config "$dir/bad.conf" 2>"$dir/err" >/dev/null
[ $? -eq 2 ] && grep -q 'bad.conf:1: not a "key = value" line' "$dir/err" || fail "syntax error: $(cat "$dir/err")"
printf '[other]\nlisten = x\n' >"$dir/bad.conf"
"$moatd" --listen "unix:$dir/sock" --config "$dir/bad.conf" 2>"$dir/err" >/dev/null
[ $? -eq 2 ] && grep -q 'unknown section \[other\]' "$dir/err" || fail "unknown section: $(cat "$dir/err")"
"$moatd" --listen "unix:$dir/sock" --config "$dir/none.conf" 2>"$dir/err" >/dev/null
[ $? -eq 2 ] && grep -q 'cannot read --config' "$dir/err" || fail "missing file: $(cat "$dir/err")"
printf 'config = x\n' >"$dir/bad.conf"
"$moatd" --listen "unix:$dir/sock" --config "$dir/bad.conf" 2>/dev/null >/dev/null
[ $? -eq 2 ] || fail "a file must not name another"

# --log-format json: one object per line.
serve --enclave-dir "$dir/enc" --log-level info --log-format json
stop
grep -v '^moatd [0-9.]*: identity key' "$dir/err" >"$dir/json"
[ -s "$dir/json" ] || fail "no json lines"
! grep -Evq '^\{"time":"[0-9-]{10}T[0-9:.]{12}Z","level":"(error|warn|info|debug)","pid":[0-9]+,"msg":".*"\}$' "$dir/json" ||
  fail "not one JSON object per line: $(cat "$dir/json")"
grep -q '"msg":"serving on unix:' "$dir/json" || fail "no serving line in json"

# Under systemd (stderr is the stream $JOURNAL_STREAM names): "<priority>level: message", no time.
: >"$dir/journal"
rm -f "$dir/ready"
JOURNAL_STREAM=$(stat -c '%d:%i' "$dir/journal") "$moatd" --listen "unix:$dir/sock" --state-dir "$dir/state" \
  --ready-file "$dir/ready" --log-level info 2>>"$dir/journal" >/dev/null &
pid=$!
for _ in $(seq 1 200); do [ -s "$dir/ready" ] && break; sleep 0.05; done
stop
grep -q '^<6>info: serving on unix:' "$dir/journal" || fail "no journal-form info line: $(cat "$dir/journal")"
grep -q '^<4>warn: nothing can be served' "$dir/journal" || fail "no journal-form warning: $(cat "$dir/journal")"

rm -rf "$dir"
echo "moatd config ok"
