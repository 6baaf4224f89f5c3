#!/usr/bin/env bash
# examples_same.sh EXAMPLES_DIR: every example host prints the same through
# the current $MOAT_BACKEND (set by with_moatd.sh, or "local") as through sim.
set -u
dir=$1
remote=${MOAT_BACKEND:-local}
fail=0
for cmd in "hello_host moat" "kv_host" "fib_host 60" "threads_host 8" "typed_host" "fib_cpp_host 60"; do
  set -- $cmd
  [ "$1" = fib_cpp_host ] && [ ! -x "$dir/$1" ] && continue # built only with a C++ compiler
  want=$(MOAT_BACKEND=sim "$dir/$1" "${@:2}" 2>/dev/null) || { echo "sim: $cmd failed"; fail=1; continue; }
  got=$(MOAT_BACKEND=$remote "$dir/$1" "${@:2}" 2>/dev/null) || { echo "$remote: $cmd failed"; fail=1; continue; }
  if [ "$want" != "$got" ]; then
    printf '%s: %s differs from sim\n--- sim\n%s\n--- %s\n%s\n' "$remote" "$cmd" "$want" "$remote" "$got"
    fail=1
  else
    echo "$remote: $cmd ok"
  fi
done
exit $fail
