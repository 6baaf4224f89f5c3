#!/usr/bin/env bash
# gdb on sim: breakpoints in enclave code and backtraces through
# host -> enclave -> exit handler -> enclave. test_gdb.sh MOAT FIB_HOST ENCLAVE_DIR
# (gdb used to hang on sim: the image was loaded as /proc/self/fd/N, which gdb
# resolved in its own process.)
set -u
moat=$1
fib_host=$2
dir=$3
command -v gdb >/dev/null || { echo "gdb is not installed: skipped"; exit 77; }
unset MOAT_BACKEND
failures=0
out=$(mktemp /tmp/moat-gdb-XXXXXX)
trap 'rm -f "$out"' EXIT

# gdb_bt OUT ARGS...: run the program under gdb in batch mode (bounded in time), backtrace at the breakpoint.
gdb_bt() {
	local file=$1
	shift
	timeout -s KILL 120 gdb -nx -batch -ex "set debuginfod enabled off" -ex "set breakpoint pending on" \
		"$@" >"$file" 2>&1
}

check() {
	if ! grep -qE "$2" "$out"; then
		echo "FAIL: $1: no '$2' in gdb's output:" >&2
		head -c 3000 "$out" >&2
		failures=$((failures + 1))
	fi
}

# A breakpoint in the hello enclave's handler, reached from the moat CLI.
gdb_bt "$out" -ex "break greet" -ex run -ex bt --args "$moat" run --backend sim "$dir/hello_enclave.so" gdb
check "hello" "Breakpoint 1, greet"
check "hello" "#[0-9]+ .*greet .*examples/hello/enclave.c"
check "hello" "#[0-9]+ .*cmd_run"

# Three levels into fib: host main -> enclave fib -> the host's exit handler (answer) -> enclave fib -> ...,
# through the calls generated from fib.proto (their code is in the build tree).
gdb_bt "$out" -ex "break fib" -ex run -ex continue -ex continue -ex bt --args "$fib_host" 5 "$dir/fib_enclave.so"
check "fib" "#0 .*fib .*examples/fib/enclave.c"
check "fib" "#[0-9]+ .*fib__v1__host__fib__call .*fib.moat-enclave.c"
check "fib" "#[0-9]+ .*exit_dispatch"
check "fib" "#[0-9]+ .*answer .*examples/fib/host.c"
check "fib" "#[0-9]+ .*main .*examples/fib/host.c"
if [ "$(grep -cE '^#[0-9]+ .* fib \(' "$out")" -lt 3 ]; then
	echo "FAIL: fib: fewer than 3 enclave frames in the backtrace" >&2
	failures=$((failures + 1))
fi

if [ $failures -eq 0 ]; then
	echo "gdb on sim: 2 passed, 0 failed"
	exit 0
fi
echo "gdb on sim: $failures check(s) failed"
exit 1
