#!/usr/bin/env bash
# Moat installed as a user installs it, checked as a user would use it:
#   test_install.sh prefix BUILD_DIR   cmake --install BUILD_DIR into a temporary prefix, then move
#                                      the prefix elsewhere (the install must be relocatable)
#   test_install.sh deb PKG_DIR        build the Debian packages into PKG_DIR (scripts/package.sh),
#                                      check their contents and dependencies, unpack them into a
#                                      scratch root
# then, against the installed tree and with no LD_LIBRARY_PATH: build a C host and a C++ enclave
# out of tree with pkg-config and with find_package(Moat), run them on sim, proc and local (libmoat
# must start the installed moat-enclave-host and moatd), and run the installed moat and moatd.
set -u
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
mode=${1:-}
arg=${2:-}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/moat-install-XXXXXX")
fail() { echo "FAIL: $*" >&2; rm -rf "$tmp"; exit 1; }
unset LD_LIBRARY_PATH MOAT_MOATD MOAT_ENCLAVE_HOST MOAT_BACKEND PKG_CONFIG_PATH CMAKE_PREFIX_PATH

# The helper programs libmoat started, from its MOAT_LOG=debug lines "using PATH", resolved.
used() { sed -n 's/^.*using \(\/.*\)$/\1/p' "$1" | while read -r p; do realpath "$p"; done; }

# run_host HOST ENCLAVE NAME PREFIX: the greeting on sim, proc and local, from the installed helpers.
run_host() {
  local host=$1 enc=$2 name=$3 prefix=$4 b want
  want="Hello, $name, from C++!"
  for b in sim proc local; do
    MOAT_BACKEND=$b MOAT_LOG=debug "$host" "$enc" "$name" >"$tmp/out" 2>"$tmp/err" ||
      fail "$host on $b: $(cat "$tmp/err")"
    [ "$(cat "$tmp/out")" = "$want" ] || fail "$host on $b printed '$(cat "$tmp/out")'"
  done
  MOAT_BACKEND=proc MOAT_LOG=debug "$host" "$enc" "$name" >/dev/null 2>"$tmp/err"
  used "$tmp/err" | grep -qx "$prefix/libexec/moat-enclave-host" ||
    fail "proc did not start $prefix/libexec/moat-enclave-host: $(cat "$tmp/err")"
  MOAT_BACKEND=local MOAT_LOG=debug "$host" "$enc" "$name" >/dev/null 2>"$tmp/err"
  used "$tmp/err" | grep -qx "$prefix/bin/moatd" || fail "local did not start $prefix/bin/moatd: $(cat "$tmp/err")"
}

# check PREFIX [ROOT]: everything a user does with an installed Moat (files outside the prefix,
# /etc for a /usr install, under ROOT).
check() {
  local prefix pcdir b root
  prefix=$(realpath "$1")
  root=${2:-$prefix}
  pcdir=$(dirname "$(find "$prefix" -name moat.pc | head -n 1)")
  [ -f "$pcdir/moat.pc" ] && [ -f "$pcdir/moat-enclave.pc" ] || fail "no moat.pc and moat-enclave.pc under $prefix"
  export PKG_CONFIG_PATH=$pcdir
  [ "$(realpath "$(pkg-config --variable=prefix moat)")" = "$prefix" ] ||
    fail "moat.pc's prefix is $(pkg-config --variable=prefix moat), not $prefix"
  [ "$(realpath "$(pkg-config --variable=prefix moat-enclave)")" = "$prefix" ] || fail "moat-enclave.pc's prefix"
  for b in moat moatd; do
    readelf -d "$prefix/bin/$b" | grep -q 'RUNPATH.*\[\$ORIGIN/' || fail "$b has no \$ORIGIN RUNPATH"
  done
  "$prefix/bin/moatd" --version | grep -q '^moatd [0-9]' || fail "installed moatd does not run"

  # pkg-config: a C host (rpath to the installed libmoat, as a user of a private prefix does) and a C++ enclave.
  mkdir -p "$tmp/pc"
  # shellcheck disable=SC2046
  cc -std=c11 -Wall -Werror $(pkg-config --cflags moat) "$here/project/host.c" -o "$tmp/pc/host" \
    $(pkg-config --libs moat) -Wl,-rpath,"$(pkg-config --variable=libdir moat)" || fail "pkg-config: host"
  # shellcheck disable=SC2046
  c++ -std=c++11 -Wall -Wextra -Wold-style-cast -Wconversion -Werror -shared $(pkg-config --cflags moat-enclave) \
    "$here/project/enclave.cpp" -o "$tmp/pc/greeter.so" $(pkg-config --libs moat-enclave) || fail "pkg-config: enclave"
  run_host "$tmp/pc/host" "$tmp/pc/greeter.so" pkg-config "$prefix"

  # find_package(Moat): the same project through CMake, with moat_add_enclave() and Moat::moatd.
  cmake -S "$here/project" -B "$tmp/cm" -DCMAKE_PREFIX_PATH="$prefix" >"$tmp/cm.log" 2>&1 &&
    cmake --build "$tmp/cm" >>"$tmp/cm.log" 2>&1 || fail "find_package project: $(cat "$tmp/cm.log")"
  [ -f "$tmp/cm/greeter.so" ] || fail "moat_add_enclave did not make greeter.so"
  run_host "$tmp/cm/host" "$tmp/cm/greeter.so" cmake "$prefix"
  [ "$(realpath "$(cat "$tmp/cm/moatd-path")")" = "$prefix/bin/moatd" ] || fail "Moat::moatd is $(cat "$tmp/cm/moatd-path")"

  # The installed moat command on every backend.
  for b in sim proc local; do
    [ "$("$prefix/bin/moat" run --backend "$b" "$tmp/cm/greeter.so" moat)" = "Hello, moat, from C++!" ] ||
      fail "moat run --backend $b"
  done
  [ "$("$prefix/bin/moat" measure "$tmp/cm/greeter.so")" = "$(sha256sum "$tmp/cm/greeter.so" | cut -d' ' -f1)" ] ||
    fail "moat measure"

  # The installed moatd as its unit starts it (the installed config file; $STATE_DIRECTORY as systemd
  # sets it; a free port instead of the file's), and the pkg-config host on the URI it printed.
  local conf unit pid uri port
  conf=$(find "$root/" -path '*/moatd/moatd.conf' | head -n 1)
  unit=$(find "$root/" -name moatd.service | head -n 1)
  [ -f "$conf" ] && [ -f "$unit" ] || fail "no moatd.conf or moatd.service under $root"
  grep -q "^ExecStart=.*/moatd --config .*/moatd/moatd.conf$" "$unit" || fail "unit: $(grep ExecStart "$unit")"
  mkdir -m 700 "$tmp/svc"
  STATE_DIRECTORY=$tmp/svc/state "$prefix/bin/moatd" --config "$conf" --listen 127.0.0.1:0 \
    --metrics-listen 127.0.0.1:0 --ready-file "$tmp/svc/ready" >"$tmp/svc/out" 2>"$tmp/svc/err" &
  pid=$!
  for _ in $(seq 1 200); do [ -s "$tmp/svc/ready" ] && break; sleep 0.05; done
  uri=$(cat "$tmp/svc/out")
  [ "$uri" = "grpc://$(cat "$tmp/svc/ready" 2>/dev/null)" ] || { kill "$pid"; wait "$pid"; fail "moatd printed '$uri': $(cat "$tmp/svc/err")"; }
  MOAT_BACKEND=$uri "$tmp/pc/host" "$tmp/pc/greeter.so" service >"$tmp/out" 2>"$tmp/err"
  rc=$?
  # Scraped as Prometheus would (bash's /dev/tcp: no HTTP client needed).
  port=$(sed -n 's|.*metrics on http://127.0.0.1:\([0-9]*\)/metrics$|\1|p' "$tmp/svc/err")
  if [ -n "$port" ] && exec 3<>"/dev/tcp/127.0.0.1/$port"; then
    printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3
    tr -d '\r' <&3 >"$tmp/svc/metrics"
    exec 3<&-
  fi
  grep -q '^moatd_entry_call_seconds_count{result="ok"} 1$' "$tmp/svc/metrics" 2>/dev/null ||
    { kill "$pid"; wait "$pid"; fail "metrics: $(cat "$tmp/svc/metrics" "$tmp/svc/err" 2>/dev/null)"; }
  kill -TERM "$pid"
  wait "$pid" || fail "moatd exited with $? on SIGTERM"
  [ $rc -eq 0 ] && [ "$(cat "$tmp/out")" = "Hello, service, from C++!" ] || fail "host on $uri: $(cat "$tmp/err")"
  [ -f "$tmp/svc/state/identity.pem" ] || fail "moatd did not keep its state in \$STATE_DIRECTORY"
}

# deb_has DEB PATH...: the package holds each path.
deb_has() {
  local deb=$1 p
  shift
  dpkg-deb -c "$deb" >"$tmp/list" || fail "dpkg-deb -c $deb"
  for p in "$@"; do
    grep -q " \./${p#/}\( \|$\)" "$tmp/list" || fail "$(basename "$deb") lacks $p"
  done
}

case $mode in
prefix)
  cmake --install "$arg" --prefix "$tmp/stage" >"$tmp/install.log" 2>&1 || fail "cmake --install: $(cat "$tmp/install.log")"
  mv "$tmp/stage" "$tmp/moved"
  ! grep -rl "$(realpath "$arg")" "$tmp/moved/lib"*/pkgconfig "$tmp/moved/lib"*/cmake 2>/dev/null | grep -q . ||
    fail "installed files name the build tree"
  check "$tmp/moved"
  ;;
deb)
  command -v dpkg-deb >/dev/null || { echo "SKIP: no dpkg-deb (not Debian)"; rm -rf "$tmp"; exit 77; }
  "$src/scripts/package.sh" "$arg" >"$tmp/package.log" 2>&1 || fail "scripts/package.sh: $(cat "$tmp/package.log")"
  v=$(sed -n 's/^project(moat VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
  lib=$arg/libmoat0_$v-1_amd64.deb dev=$arg/libmoat-dev_$v-1_amd64.deb srv=$arg/moatd_$v-1_amd64.deb
  deb_has "$lib" usr/lib/x86_64-linux-gnu/libmoat.so.0 usr/libexec/moat-enclave-host
  deb_has "$dev" usr/include/moat/moat.h usr/include/moat/moat.hpp usr/lib/x86_64-linux-gnu/libmoat.so usr/lib/x86_64-linux-gnu/libmoat_enclave.a \
    usr/lib/x86_64-linux-gnu/pkgconfig/moat.pc usr/lib/x86_64-linux-gnu/pkgconfig/moat-enclave.pc \
    usr/lib/x86_64-linux-gnu/cmake/Moat/MoatConfig.cmake usr/share/moat/proto/moat/v1/target.proto
  deb_has "$srv" usr/bin/moatd usr/bin/moat usr/lib/x86_64-linux-gnu/cmake/Moat/MoatToolsTargets.cmake
  for d in "$lib" "$dev" "$srv"; do
    ! dpkg-deb -c "$d" | grep -q "\./usr/local" || fail "$(basename "$d") installs into /usr/local"
  done
  dpkg-deb -f "$lib" Depends | grep -q 'libgrpc' || fail "libmoat0 does not depend on gRPC"
  dpkg-deb -f "$dev" Depends | grep -q "libmoat0 (= $v-1)" || fail "libmoat-dev does not depend on libmoat0"
  dpkg-deb -f "$srv" Depends | grep -q "libmoat0 (= $v-1)" || fail "moatd does not depend on libmoat0"
  # apt resolves the three against this system's archive (a simulation: nothing is installed).
  if command -v apt-get >/dev/null; then
    apt-get install -s -qq "$(realpath "$lib")" "$(realpath "$dev")" "$(realpath "$srv")" >"$tmp/apt.log" 2>&1 ||
      fail "apt-get install -s: $(cat "$tmp/apt.log")"
  fi
  for d in "$lib" "$dev" "$srv"; do
    dpkg-deb -x "$d" "$tmp/root" || fail "dpkg-deb -x $d"
  done
  deb_has "$srv" etc/moatd/moatd.conf usr/lib/systemd/system/moatd.service usr/share/man/man8/moatd.8.gz \
    usr/share/man/man1/moat.1.gz
  dpkg-deb --fsys-tarfile "$srv" | tar -xO ./usr/share/man/man8/moatd.8.gz | zcat | grep -Eq -- 'log\\?-format' ||
    fail "moatd(8) does not list the options of moatd --help"
  dpkg-deb -I "$srv" conffiles | grep -qx /etc/moatd/moatd.conf || fail "moatd.conf is not a conffile"
  check "$tmp/root/usr" "$tmp/root"
  # The unit, with its paths moved into the scratch root, passes systemd's own check.
  if command -v systemd-analyze >/dev/null; then
    sed "s|/usr/bin/moatd|$tmp/root/usr/bin/moatd|; s|/etc/moatd/|$tmp/root/etc/moatd/|g" \
      "$tmp/root/usr/lib/systemd/system/moatd.service" >"$tmp/moatd.service"
    systemd-analyze verify --man=no "$tmp/moatd.service" >"$tmp/verify.log" 2>&1 || fail "systemd-analyze verify: $(cat "$tmp/verify.log")"
    [ ! -s "$tmp/verify.log" ] || fail "systemd-analyze verify: $(cat "$tmp/verify.log")"
  fi
  ;;
*)
  echo "usage: test_install.sh prefix BUILD_DIR | deb PKG_DIR" >&2
  rm -rf "$tmp"
  exit 2
  ;;
esac
rm -rf "$tmp"
echo "install ($mode) ok"
