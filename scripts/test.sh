#!/usr/bin/env bash
# Install dependencies, build, and run the whole test suite three ways:
# a normal build, an ASan+UBSan build, and the normal build under valgrind
# (0 bytes definitely lost). Pass --quick for the normal build only. The
# install tests (label install: a prefix install and the Debian packages
# used as a user would) run in the normal pass only.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[ "${1:-}" = "--quick" ] && quick=1
scripts/deps.sh

echo "== build (warnings are errors)"
scripts/build.sh build
echo "== tests"
(cd build && ctest --output-on-failure -j2 --timeout 300 -LE soak)
[ $quick -eq 1 ] && exit 0

echo "== ASan+UBSan build and tests"
scripts/build.sh build-asan -DMOAT_ASAN=ON -DCMAKE_BUILD_TYPE=Debug
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j2 --timeout 600 -LE "slow|soak|install")

echo "== valgrind memcheck (definite leaks fail)"
scripts/build.sh build-valgrind -DMOAT_VALGRIND=ON
(cd build-valgrind && ctest --output-on-failure -j2 --timeout 900 -LE 'slow|novalgrind|soak|install')
