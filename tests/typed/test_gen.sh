#!/usr/bin/env bash
# test_gen.sh PROTOC PLUGIN OPTIONS_DIR MOAT_INCLUDE CC CXX: protoc-gen-moat on
# the test protos. Every supported construct generates code that compiles with
# -Wall -Wextra -Werror as C11 and as C++17 (CXX may be empty: no C++ check);
# selectors do not move when methods are added or reordered; what the plugin
# cannot generate fails with a message that says why.
set -u
protoc=$1 plugin=$2 options=$3 include=$4 cc=$5 cxx=${6:-}
src=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/moat-gen-XXXXXX")
trap 'rm -rf "$work"' EXIT
fail=0
cflags=(-std=c11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wcast-qual -Wconversion
        -I"$include" -I"$work/out")
cxxflags=(-std=c++17 -Wall -Wextra -Werror -Wshadow -I"$include" -I"$work/out")

gen() { # gen OUTDIR PROTO... -> protoc's exit status, its messages in $work/err
  mkdir -p "$1"
  local out=$1
  shift
  (cd "$src" && "$protoc" --plugin=protoc-gen-moat="$plugin" --c_out="$out" --moat_out="$out" -I. -I"$options" "$@") \
    2>"$work/err"
}

check() { # check WHAT COMMAND...
  local what=$1
  shift
  if "$@" >"$work/log" 2>&1; then
    echo "ok: $what"
  else
    echo "FAIL: $what"
    cat "$work/log" "$work/err" 2>/dev/null | head -20
    fail=1
  fi
}

# Every supported construct: generate, then compile each side as C11 and C++17
# (the headers of the imports, options.proto and descriptor.proto, as moat_generate() makes them).
mkdir -p "$work/out"
check "generate options.proto's header" "$protoc" --c_out="$work/out" -I"$options" moat/v1/options.proto \
  google/protobuf/descriptor.proto
check "generate alltypes, constructs, proto2, host_entry_same, c_package" \
  gen "$work/out" alltypes.proto constructs.proto proto2.proto host_entry_same.proto c_package.proto
check "c_package renames the calls as protobuf-c renames the types" \
  grep -q "int renamed__pinger__send__call(moat_enclave \*enclave, const Renamed__Ping__Nested \*request" \
  "$work/out/c_package.moat.h"
for stem in alltypes constructs proto2 host_entry_same c_package; do
  for side in moat moat-enclave; do
    check "$stem.$side.c as C11" "$cc" "${cflags[@]}" -c "$work/out/$stem.$side.c" -o "$work/$stem.$side.o"
    if [ -n "$cxx" ]; then
      check "$stem.$side.c as C++17" "$cxx" "${cxxflags[@]}" -x c++ -c "$work/out/$stem.$side.c" \
        -o "$work/$stem.$side.cc.o"
    fi
  done
  printf '#include "%s.moat.h"\nint moat_gen_test_%s(void);\nint moat_gen_test_%s(void) { return 0; }\n' \
    "$stem" "$stem" "$stem" >"$work/$stem.use.c"
  check "$stem.moat.h alone as C11 -pedantic" "$cc" "${cflags[@]}" -pedantic -c "$work/$stem.use.c" -o "$work/u.o"
  if [ -n "$cxx" ]; then
    check "$stem.moat.h alone as C++17" "$cxx" "${cxxflags[@]}" -x c++ -c "$work/$stem.use.c" -o "$work/u.o"
  fi
done

# A .proto named with a directory (typed/proto2.proto): outputs and includes keep the directory.
check "generate typed/proto2.proto from tests/" \
  sh -c 'cd "$1/.." && "$2" --plugin=protoc-gen-moat="$3" --c_out="$4" --moat_out="$4" -I. typed/proto2.proto' \
  sh "$src" "$protoc" "$plugin" "$work/out"
for f in typed/proto2.moat.c typed/proto2.moat-enclave.c; do
  check "$f as C11" "$cc" "${cflags[@]}" -c "$work/out/$f" -o "$work/sub.o"
done

# Selectors are derived from names: adding a method and reordering keep them.
check "generate stable_v1" gen "$work/v1" stable_v1.proto
check "generate stable_v2" gen "$work/v2" stable_v2.proto
for m in ALPHA BETA; do
  a=$(grep "define STABLE__S__${m}__SELECTOR" "$work/v1/stable_v1.moat.h")
  b=$(grep "define STABLE__S__${m}__SELECTOR" "$work/v2/stable_v2.moat.h")
  check "selector of $m stays ($a)" test -n "$a" -a "$a" = "$b"
done

# What cannot be generated fails, saying why.
refuse() { # refuse PROTO EXPECTED-TEXT
  if gen "$work/bad" "$1"; then
    echo "FAIL: $1 was accepted"
    fail=1
  elif grep -qF "$2" "$work/err"; then
    echo "ok: $1 refused: $(grep -F "$2" "$work/err")"
  else
    echo "FAIL: $1: expected \"$2\", got:"
    cat "$work/err"
    fail=1
  fi
}
refuse bad/server_streaming.proto "S/Watch: streaming methods are not supported"
refuse bad/client_streaming.proto "S/Upload: streaming methods are not supported"
refuse bad/reserved_selector.proto "S/Log: selector 1 is reserved (below MOAT_SELECTOR_USER, 1024)"
refuse bad/collision.proto "S/A and T/B: both have selector 2000"
refuse bad/register_name.proto "the name MoatRegister is taken"

# Not through protoc: a clear message, not a crash.
if echo garbage | "$plugin" >/dev/null 2>"$work/err"; then
  echo "FAIL: the plugin accepted garbage on stdin"
  fail=1
else
  check "garbage on stdin refused" grep -q "not a CodeGeneratorRequest" "$work/err"
fi
exit $fail
