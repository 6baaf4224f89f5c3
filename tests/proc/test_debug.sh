#!/usr/bin/env bash
# Debug mode (MOAT_LOAD_DEBUG, MOAT_DEBUG=1): `moat debug` on proc and on a
# private moatd (local) waits for gdb, which attaches to the enclave's process,
# stops at a breakpoint in the enclave and resolves its frames; a moatd
# started without --allow-debug refuses debug mode; at --log-level debug
# moatd traces every call of a session; a crash on moatd is reported to the
# host and logged with its session.
# test_debug.sh MOAT MOATD ENCLAVE_DIR
set -u
moat=$1
moatd=$2
dir=$3
command -v gdb >/dev/null || { echo "gdb is not installed: skipped"; exit 77; }
unset MOAT_BACKEND MOAT_DEBUG MOAT_TRACE
work=$(mktemp -d "${TMPDIR:-/tmp}/moat-debug-XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	rm -rf "$work"
}
trap cleanup EXIT
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# debug BACKEND: moat debug, gdb -p on the process it names, a breakpoint in greet.
debug() {
	local backend=$1 pid="" i
	"$moat" debug --backend "$backend" "$dir/hello_enclave.so" gdb >"$work/out" 2>"$work/err" &
	local cli=$!
	pids+=("$cli")
	for i in $(seq 1 300); do
		pid=$(sed -n 's/.* runs in process \([0-9]*\) .*/\1/p' "$work/err" | head -1)
		[ -n "$pid" ] && break
		sleep 0.1
	done
	if [ -z "$pid" ]; then
		fail "$backend: moat debug named no process: $(cat "$work/err")"
		return
	fi
	grep -q "gdb -p $pid" "$work/err" || fail "$backend: no gdb command line: $(cat "$work/err")"
	timeout -s KILL 120 gdb -nx -batch -ex "set debuginfod enabled off" -p "$pid" -ex "break greet" \
		-ex continue -ex bt >"$work/gdb" 2>&1
	grep -qE "hit Breakpoint 1, greet" "$work/gdb" || fail "$backend: the breakpoint was not hit: $(head -c 3000 "$work/gdb")"
	grep -qE "^#0 +greet .*examples/hello/enclave.c" "$work/gdb" || fail "$backend: no symbolized enclave frame: $(grep '^#' "$work/gdb")"
	grep -qE "^#[0-9]+ .*moat__enclave_call .*src/enclave/runtime.c" "$work/gdb" || fail "$backend: no runtime frame"
	wait "$cli" || fail "$backend: moat debug exited $?: $(cat "$work/err")"
	grep -qx "Hello, gdb!" "$work/out" || fail "$backend: the call's output is missing: $(cat "$work/out")"
}
debug proc
debug local

# A moatd without --allow-debug refuses debug mode; with it, the session says debug mode in its log.
start_moatd() {
	rm -f "$work/ready"
	"$moatd" --listen "unix:$work/sock" --state-dir "$work/state" --enclave-dir "$dir" \
		--ready-file "$work/ready" --log-level info "$@" 2>"$work/moatd.err" &
	pids+=("$!")
	for _ in $(seq 1 200); do [ -s "$work/ready" ] && break; sleep 0.05; done
	[ -s "$work/ready" ] || fail "moatd did not start: $(cat "$work/moatd.err")"
}
stop_moatd() {
	kill "${pids[-1]}"
	wait "${pids[-1]}"
}
start_moatd
MOAT_DEBUG=1 "$moat" run --backend "unix:$work/sock" --by-name hello_enclave.so x >"$work/out" 2>"$work/err"
[ $? -ne 0 ] || fail "moatd without --allow-debug ran a debug session"
grep -q -- "--allow-debug" "$work/err" || fail "the refusal does not name --allow-debug: $(cat "$work/err")"
"$moat" run --backend "unix:$work/sock" --by-name hello_enclave.so x >"$work/out" 2>&1 || fail "a plain session failed: $(cat "$work/out")"
stop_moatd
start_moatd --allow-debug --log-level debug
MOAT_DEBUG=1 "$moat" run --backend "unix:$work/sock" --by-name hello_enclave.so x >"$work/out" 2>"$work/err" ||
	fail "moatd --allow-debug refused: $(cat "$work/err")"
grep -qx "Hello, x!" "$work/out" || fail "debug session output: $(cat "$work/out")"
# A crash: the host's error names the image as the host did and carries the backtrace; moatd logs it.
"$moat" run --backend "unix:$work/sock" --by-name proc_crash_enclave.so >"$work/out" 2>"$work/err" &&
	fail "the crash enclave did not crash"
grep -q "proc_crash_enclave.so: the enclave crashed in entry call 1024: killed by signal 11 (SIGSEGV" "$work/err" ||
	fail "crash error: $(cat "$work/err")"
grep -q "backtrace: #0 store (crash_enclave.c:13) #1 remember (crash_enclave.c:18) #2 run (crash_enclave.c:24)" "$work/err" ||
	fail "crash backtrace: $(cat "$work/err")"
grep -qE "/proc/self/fd|images/" "$work/err" && fail "the error names moatd's files: $(cat "$work/err")"
stop_moatd
grep -qE "warn: session [0-9a-f]+: proc_crash_enclave.so: the enclave crashed in entry call 1024: .*backtrace: #0 store" \
	"$work/moatd.err" || fail "moatd did not log the crash: $(cat "$work/moatd.err")"
grep -qE "session [0-9a-f]+: debug mode: attach with: gdb -p [0-9]+" "$work/moatd.err" ||
	fail "moatd did not log the debug session: $(cat "$work/moatd.err")"
# At --log-level debug moatd traces every call of each session (libmoat's MOAT_LOAD_TRACE).
grep -qE "session [0-9a-f]+: trace proc: entry call 1024: in 1 item 1 B, out 1 item 9 B, result 0, " "$work/moatd.err" ||
	fail "moatd did not trace the entry call: $(cat "$work/moatd.err")"
grep -qE "session [0-9a-f]+: trace proc: exit call 1: in 1 item " "$work/moatd.err" ||
	fail "moatd did not trace the exit call: $(cat "$work/moatd.err")"

if [ $failures -eq 0 ]; then
	echo "debug mode: all checks passed"
	exit 0
fi
echo "debug mode: $failures check(s) failed"
exit 1
