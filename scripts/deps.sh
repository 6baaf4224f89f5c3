#!/usr/bin/env bash
# Install the Debian packages Moat needs to build and test. Idempotent: it
# does nothing when every package is already there.
set -euo pipefail
pkgs=(build-essential cmake pkg-config libgrpc-dev libprotobuf-c-dev protobuf-c-compiler
      libssl-dev libseccomp-dev libdw-dev libcmocka-dev valgrind openssl clang gdb
      protobuf-compiler libprotobuf-dev libprotoc-dev python3-grpcio python3-protobuf
      libsystemd-dev libinih-dev help2man libmicrohttpd-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
