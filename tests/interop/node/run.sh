#!/usr/bin/env bash
# Run the Node.js host client (client.js) against a real moatd:
#   tests/interop/node/run.sh [BUILD_DIR]     (default: build)
# Installs the pinned npm packages (npm ci), starts moatd on a free loopback
# port with a temporary state directory, the test enclaves and --allow-upload,
# runs the client, and always stops moatd. Bounded: the client in 120 s, the
# whole script in about 5 minutes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
build=$(cd "$root/${1:-build}" && pwd)
moatd=$build/bin/moatd
enclaves=$build/enclaves
for f in "$moatd" "$enclaves/test_enclave.so"; do
	[ -e "$f" ] || { echo "run.sh: $f missing: build first (scripts/build.sh)" >&2; exit 2; }
done
command -v node >/dev/null && command -v npm >/dev/null || { echo "run.sh: node and npm are needed" >&2; exit 2; }

cd "$here"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then
	timeout 300 npm ci --no-audit --no-fund --loglevel=error
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/moat-interop-node.XXXXXX")
pid=
stop() {
	local rc=$?
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	if [ "$rc" -ne 0 ] && [ -s "$tmp/moatd.err" ]; then
		echo "--- moatd's log:" >&2
		tail -n 40 "$tmp/moatd.err" >&2
	fi
	rm -rf "$tmp"
	exit "$rc"
}
trap stop EXIT
trap 'exit 130' INT TERM

"$moatd" --listen 127.0.0.1:0 --state-dir "$tmp/state" --enclave-dir "$enclaves" --allow-upload \
	--max-nesting 4 --max-message-bytes 2097152 --ready-file "$tmp/ready" --log-level info >"$tmp/moatd.out" 2>"$tmp/moatd.err" &
pid=$!
for _ in $(seq 100); do
	[ -s "$tmp/ready" ] && break
	kill -0 "$pid" 2>/dev/null || { echo "run.sh: moatd exited at start" >&2; exit 1; }
	sleep 0.1
done
[ -s "$tmp/ready" ] || { echo "run.sh: moatd not ready in 10 s" >&2; exit 1; }
addr=$(cat "$tmp/ready")
# moatd prints "moatd VERSION: identity key ed25519:<64 hex>" on stderr: the client pins it.
key=$(sed -n 's/.*identity key ed25519:\([0-9a-f]\{64\}\).*/\1/p' "$tmp/moatd.err" | head -n 1)
[ -n "$key" ] || { echo "run.sh: no identity key in moatd's log" >&2; exit 1; }
echo "moatd $pid on $addr, identity key $key"

timeout 150 node "$here/client.js" --target "$addr" --enclave-dir "$enclaves" --target-key "$key" \
	--proto-dir "$root/proto" --max-nesting 4 --max-message-bytes 2097152
