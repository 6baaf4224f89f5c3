#!/usr/bin/env bash
# bench_smoke: run moat-bench in smoke mode; pass when it exits 0 and prints
# every row it plans (with numbers or "n/a (reason)"). Times are not judged.
set -euo pipefail
bench=$1
out=$(mktemp)
json=$(mktemp)
trap 'rm -f "$out" "$json"' EXIT
"$bench" --smoke --json "$json" >"$out"
cat "$out"
missing=0
for id in $("$bench" --list); do
	if ! grep -Eq "^$id +" "$out"; then
		echo "bench_smoke: row $id was not printed" >&2
		missing=1
	elif grep -E "^$id +" "$out" | grep -q "NOT MEASURED"; then
		echo "bench_smoke: row $id was never measured" >&2
		missing=1
	fi
	grep -q "\"id\": \"$id\"" "$json" || { echo "bench_smoke: row $id missing from the JSON" >&2; missing=1; }
done
grep -q "== targets" "$out" || { echo "bench_smoke: no targets table" >&2; missing=1; }
exit $missing
