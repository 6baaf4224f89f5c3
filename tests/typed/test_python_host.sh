#!/usr/bin/env bash
# test_python_host.sh PROTOC SOURCE_DIR ENCLAVE TYPED_HOST, run by with_moatd.sh:
# examples/typed/host.py, a host in Python that knows only target.proto and
# iface.proto, prints through the moatd in $MOAT_BACKEND what typed_host prints
# on sim. Skipped (77) without a Python that has grpc and protobuf.
set -u
protoc=$1 src=$2 enclave=$3 host=$4
py=
for p in /usr/bin/python3 python3; do
  if "$p" -c 'import grpc, google.protobuf' 2>/dev/null; then
    py=$p
    break
  fi
done
[ -n "$py" ] || { echo "test_python_host: no python3 with grpc and protobuf: skipped"; exit 77; }
gen=$(mktemp -d "${TMPDIR:-/tmp}/moat-py-XXXXXX")
trap 'rm -rf "$gen"' EXIT
"$protoc" --python_out="$gen" -I"$src/proto" -I"$src/examples/typed" moat/v1/target.proto moat/v1/frame.proto \
  moat/v1/options.proto iface.proto || exit 1
want=$(MOAT_BACKEND=sim "$host" "$enclave" 2>/dev/null) || { echo "typed_host failed on sim"; exit 1; }
got=$("$py" "$src/examples/typed/host.py" "$gen" "${MOAT_BACKEND#grpc://}" "$enclave") || {
  echo "host.py failed"
  exit 1
}
if [ "$want" != "$got" ]; then
  printf 'host.py differs from typed_host on sim\n--- sim\n%s\n--- host.py\n%s\n' "$want" "$got"
  exit 1
fi
printf '%s\n' "$got"
echo "host.py on $MOAT_BACKEND: same as typed_host on sim"
