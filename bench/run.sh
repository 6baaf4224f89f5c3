#!/usr/bin/env bash
# Build Moat in Release mode and run the benchmark suite:
#   bench/run.sh [moat-bench options...]     e.g. bench/run.sh --only sim,proc
# Writes the table to stdout and JSON to build-bench/bench.json (override with --json FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${MOAT_BENCH_BUILD_DIR:-build-bench}
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release >"$dir.configure.log" 2>&1 || { cat "$dir.configure.log"; exit 1; }
cmake --build "$dir" -j2 >"$dir/build.log" 2>&1 || { tail -50 "$dir/build.log"; exit 1; }
json=()
case " $* " in *" --json "*) ;; *) json=(--json "$dir/bench.json") ;; esac
exec "$dir/bin/moat-bench" "${json[@]}" "$@"
