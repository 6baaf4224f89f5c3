#!/usr/bin/env bash
# with_moatd.sh MOATD [MOATD ARGS...] -- CMD [ARGS...]
# Start moatd on a free loopback port, run CMD with MOAT_BACKEND=grpc://ADDR,
# then stop moatd (SIGTERM, by PID) and reap it. Fails when CMD fails or
# moatd does not exit cleanly. $MOATD_LAUNCHER (e.g. a valgrind command
# line) is put in front of moatd.
set -u
moatd=$1
shift
extra=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  extra+=("$1")
  shift
done
shift
dir=$(mktemp -d "${TMPDIR:-/tmp}/moat-test-XXXXXX")
${MOATD_LAUNCHER:-} "$moatd" --listen 127.0.0.1:0 --state-dir "$dir/state" --allow-upload --ready-file "$dir/ready" \
  ${extra[@]+"${extra[@]}"} >"$dir/stdout" &
pid=$!
for _ in $(seq 1 1200); do
  [ -s "$dir/ready" ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.05
done
if [ ! -s "$dir/ready" ]; then
  echo "with_moatd: moatd did not become ready" >&2
  kill "$pid" 2>/dev/null
  wait "$pid"
  rm -rf "$dir"
  exit 1
fi
export MOAT_BACKEND="grpc://$(cat "$dir/ready")"
echo "with_moatd: moatd $pid on $MOAT_BACKEND" >&2
"$@"
rc=$?
kill -TERM "$pid"
wait "$pid"
mrc=$?
rm -rf "$dir"
if [ "$rc" -eq 0 ] && [ "$mrc" -ne 0 ]; then
  echo "with_moatd: moatd exited with status $mrc" >&2
  rc=1
fi
exit "$rc"
