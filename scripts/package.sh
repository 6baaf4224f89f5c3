#!/usr/bin/env bash
# Build Moat's Debian packages (libmoat0, libmoat-dev, moatd) with CPack:
# scripts/package.sh [DIR]; the .deb files land in DIR (default build-pkg).
# Install them with: apt install ./DIR/*.deb
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build-pkg}
scripts/deps.sh
scripts/build.sh "$dir" -DCMAKE_INSTALL_PREFIX=/usr -DMOAT_BUILD_TESTS=OFF
rm -f "$dir"/*.deb
(cd "$dir" && cpack -G DEB >cpack.log 2>&1) || { cat "$dir/cpack.log"; exit 1; }
ls "$dir"/*.deb
