#!/usr/bin/env bash
# Moat's main job: build, then call the hello example enclave through a
# backend (default: local, a private moatd). scripts/run-example.sh [BACKEND] [NAME]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh build >/dev/null
backend=${1:-local}
name=${2:-world}
echo "moat run --backend $backend hello_enclave.so $name" >&2
exec build/bin/moat run --backend "$backend" build/enclaves/hello_enclave.so "$name"
