#!/usr/bin/env bash
# test_gen.sh PROTOC PLUGIN OPTIONS_DIR MOAT_INCLUDE CC CXX: protoc-gen-moat on
# the test protos. Every supported construct generates code that compiles with
# -Wall -Wextra -Werror as C11 and as C++17, and the headers' C++ part as strict
# C++11 for moat/moat.hpp's typed calls (CXX may be empty: no C++ check);
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
# What moat/moat.hpp's users compile with (as fib_cpp_host and test_headers do).
cxx11flags=(-std=c++11 -pedantic -Wall -Wextra -Werror -Wshadow -Wold-style-cast -Wconversion -Wsign-conversion
            -I"$include" -I"$work/out")

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
check "generate alltypes, constructs, proto2, host_entry_same, c_package, cxx_names" \
  gen "$work/out" alltypes.proto constructs.proto proto2.proto host_entry_same.proto c_package.proto cxx_names.proto
check "c_package renames the calls as protobuf-c renames the types" \
  grep -q "int renamed__pinger__send__call(moat_enclave \*enclave, const Renamed__Ping__Nested \*request" \
  "$work/out/c_package.moat.h"
for stem in alltypes constructs proto2 host_entry_same c_package cxx_names; do
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
    check "$stem.moat.h alone as strict C++11" "$cxx" "${cxx11flags[@]}" -x c++ -c "$work/$stem.use.c" -o "$work/u.o"
  fi
done

# The C++ part: moat/moat.hpp's call<M>() and on_exit<M>() with the types of every kind of name.
if [ -n "$cxx" ]; then
  cat >"$work/use.cc" <<'CXX'
#include <moat/moat.hpp>

#include "alltypes.moat.h"
#include "c_package.moat.h"
#include "constructs.moat.h"
#include "cxx_names.moat.h"

int use_typed(moat::enclave &e);
int use_typed(moat::enclave &e)
{
	TypedTest__V1__All a = typed_test::v1::Echo::Same::request();
	moat::reply<TypedTest__V1__All> r = e.call<typed_test::v1::Echo::Same>(a);
	auto p = e.call<original::v1::Pinger::Send>();                    // c_package: the .proto's package
	auto i = e.call<snake_service::get_value>(snake_service::get_value::request()); // no package
	auto c = e.call<cxx::new_::v1::Call::Call>();                     // a keyword; a method named as its service
	auto n = e.call<cxx::new_::v1::Call::name_>();                    // the members' names
	auto s = e.call<cxx::new_::v1::Call::selector_>();

	e.on_exit<typed_test::v1::Mirror::Same>([](const TypedTest__V1__All &q, TypedTest__V1__All &out) {
		out.f_int64 = q.f_int64;
		return 0;
	});
	e.on_exit<HostSide::Tell>([](const Outer &, Outer__Inner &out) {
		out.value = 1;
		return 0;
	});
	e.on_exit<cxx::new_::v1::Host::request_>(nullptr);
	static_assert(cxx::new_::v1::Host::request_::host && !cxx::new_::v1::Call::Call::host, "host");
	return r->f_int32 + i->value + c->value + n->value + s->value + (p->text ? 1 : 0);
}
CXX
  check "moat.hpp's typed calls as strict C++11" "$cxx" "${cxx11flags[@]}" -c "$work/use.cc" -o "$work/use.o"
  # Each kind of method used the wrong way round fails to compile, saying why.
  misuse() { # misuse WHAT STATEMENT EXPECTED
    printf '#include <moat/moat.hpp>
#include "alltypes.moat.h"
void misuse(moat::enclave &e);
void misuse(moat::enclave &e)
{
	%s;
}
' \
      "$2" >"$work/misuse.cc"
    if "$cxx" "${cxx11flags[@]}" -c "$work/misuse.cc" -o "$work/misuse.o" 2>"$work/err"; then
      echo "FAIL: $1 compiled"
      fail=1
    elif grep -qF "$3" "$work/err"; then
      echo "ok: $1 refused: $3"
    else
      echo "FAIL: $1: expected \"$3\", got:"
      head -20 "$work/err"
      fail=1
    fi
  }
  misuse "call<M>() of an exit method" "e.call<typed_test::v1::Mirror::Same>()" "M is an exit call"
  misuse "on_exit<M>() of an entry method" "e.on_exit<typed_test::v1::Echo::Same>(nullptr)" "M is an entry call"
fi

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
