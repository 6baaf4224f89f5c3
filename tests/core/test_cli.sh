#!/usr/bin/env bash
# CLI tests: test_cli.sh MOAT ENCLAVE_DIR [LAUNCHER...]
# Every moat invocation runs under LAUNCHER (e.g. valgrind) when one is given.
# Valgrind's own failure code is 99, so exit codes are checked exactly.
set -u
moat=$1
dir=$2
shift 2
launcher=("$@")
unset MOAT_BACKEND
tmp=$(mktemp -d /tmp/moat-cli-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
failures=0

fail() {
	echo "FAIL: $*" >&2
	echo "  stdout: $(head -c 400 "$tmp/out")" >&2
	echo "  stderr: $(head -c 800 "$tmp/err")" >&2
	failures=$((failures + 1))
}

# run EXPECTED_STATUS ARGS...: run moat, keep stdout/stderr in $tmp/out, $tmp/err.
run() {
	local want=$1 got
	shift
	"${launcher[@]}" "$moat" "$@" >"$tmp/out" 2>"$tmp/err"
	got=$?
	if [ "$got" -ne "$want" ]; then
		fail "moat $* exited $got, want $want"
		return 1
	fi
	return 0
}

out_is() { [ "$(cat "$tmp/out")" = "$1" ] || fail "stdout is not '$1'"; }
out_has() { grep -q -- "$1" "$tmp/out" || fail "stdout lacks '$1'"; }
err_has() { grep -q -- "$1" "$tmp/err" || fail "stderr lacks '$1'"; }
# A failure says why in exactly one line that starts with "moat: ".
one_line_reason() {
	[ "$(wc -l <"$tmp/err")" -eq 1 ] || fail "stderr is not one line"
	grep -q '^moat: ' "$tmp/err" || fail "stderr does not start with 'moat: '"
	grep -q -- "$1" "$tmp/err" || fail "reason lacks '$1'"
}
# A usage error starts with a one-line reason, followed by the usage text.
reason_then_usage() {
	head -n 1 "$tmp/err" | grep -q "^moat: .*$1" || fail "first stderr line lacks 'moat: ...$1'"
	grep -q '^usage: ' "$tmp/err" || fail "no usage after the reason"
}

hello=$dir/hello_enclave.so

# Help and version.
run 0 --help && out_has "usage: moat"
run 0 -h && out_has "usage: moat"
run 0 --version && out_is "moat $(grep -o 'MOAT_VERSION_STRING "[^"]*"' "$(dirname "$0")/../../include/moat/common.h" | cut -d'"' -f2)"
run 0 -V && out_has "^moat [0-9]"
run 0 run --help && out_has "usage: moat run"
run 0 measure --help && out_has "usage: moat measure"

# run on sim: the reply on stdout, the enclave's log line on stderr.
run 0 run --backend sim "$hello" Alice && { out_is "Hello, Alice!"; err_has "hello enclave: greeting Alice"; }
MOAT_BACKEND=sim run 0 run "$hello" "Bob Smith" && out_is "Hello, Bob Smith!"
run 0 run "$hello" && out_is "Hello, world!"
run 0 run "$dir/fib_raw_enclave.so" 90 && out_is "2880067194370816120"
run 0 run "$dir/threads_enclave.so" 4 && out_is "$(printf '500000500000\n4')"
run 0 run "$dir/kv_raw_enclave.so" put k v get k get nope && out_is "$(printf 'v\n(not found)')"
# --verbose says where the enclave runs, on stderr only (remote targets: test_remote_fleet_dns).
run 0 run --verbose "$hello" v && { out_is "Hello, v!"; err_has "runs on this machine (backend sim)"; }

# measure: 64 lowercase hex digits, equal to sha256sum of the file.
if run 0 measure "$hello"; then
	m=$(cat "$tmp/out")
	[[ "$m" =~ ^[0-9a-f]{64}$ ]] || fail "measure printed '$m'"
	if command -v sha256sum >/dev/null; then
		[ "$m" = "$(sha256sum "$hello" | cut -d' ' -f1)" ] || fail "measure differs from sha256sum"
	fi
	run 0 run --expect "$m" "$hello" pinned && out_is "Hello, pinned!"
	wrong=$(printf '%s' "$m" | tr '0-9a-f' '1-9a-f0')
	run 1 run --expect "$wrong" "$hello" && { one_line_reason "measurement"; [ -s "$tmp/out" ] && fail "stdout not empty"; }
fi

# Bad input: non-zero status and a one-line reason.
run 1 run "$tmp/missing.so" && one_line_reason "no such file"
run 1 measure "$tmp/missing.so" && one_line_reason "no such file"
printf 'not an elf\n' >"$tmp/text.so"
run 1 run "$tmp/text.so" && one_line_reason "not an ELF"
run 1 run --backend nosuch "$hello" && one_line_reason "unknown backend 'nosuch'"
run 1 run "$dir/kv_raw_enclave.so" bogus k && one_line_reason "run: "
run 2 run --expect zz "$hello" && one_line_reason "hex digits"
# 64 characters that sscanf("%2x") would have taken: signs and spaces are not hex digits.
run 2 run --expect "$(printf ' 1%.0s' $(seq 32))" "$hello" && one_line_reason "hex digits"
run 2 run --expect "$(printf '+f%.0s' $(seq 32))" "$hello" && one_line_reason "hex digits"
run 2 run --timeout abc "$hello" && one_line_reason "milliseconds"
run 2 run --timeout -1 "$hello" && one_line_reason "milliseconds"
run 2 run --timeout 99999999999999 "$hello" && one_line_reason "milliseconds"
run 0 run --timeout 5000 "$hello" t && out_is "Hello, t!"
run 2 && grep -q '^usage: moat' "$tmp/err" || fail "no usage without arguments"
run 2 frobnicate && reason_then_usage "unknown command 'frobnicate'"
run 2 run && reason_then_usage "no enclave image"
run 2 measure && grep -q '^usage: moat measure' "$tmp/err" || fail "measure without image: no usage"
run 2 run --no-such-option "$hello" && grep -q 'usage: moat run' "$tmp/err" || fail "bad option: no usage"

if [ $failures -ne 0 ]; then
	echo "$failures CLI check(s) failed" >&2
	exit 1
fi
echo "all CLI checks passed"
