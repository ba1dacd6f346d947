#!/usr/bin/env bash
# Packs what scripts/gpu-check.sh runs on a GPU machine that has the NVIDIA driver but not this
# project's Debian packages: a CUDA build's binaries, the shared libraries they link (except
# glibc's and the driver's), and ../shared/golden. Writes $BUNDLE/bundle.tar.xz (default
# .gpu-bundle, which git ignores).
#   BUILD (default build-cuda): a build configured with -DJETMOE_CUDA=ON.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-cuda}
BUNDLE=${BUNDLE:-.gpu-bundle}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib" "$BUNDLE"
# scripts/test.sh builds only part of build-cuda's tests; the bundle needs the whole binary.
cmake --build "$BUILD" -j"${JOBS:-$(nproc)}" --target jetmoe jetmoe_tests
cp "$BUILD/jetmoe" "$BUILD/tests/jetmoe_tests" "$stage/bin/"
for f in "$stage"/bin/*; do
  ldd "$f" | awk '/=> \// {print $3}'
done | sort -u | grep -Ev '/(libc|libm|libdl|librt|libpthread|ld-linux[^/]*|libcuda)\.so' | while read -r lib; do
  cp -L "$lib" "$stage/lib/"
done
cp -r ../shared/golden "$stage/golden"
tar -C "$stage" -cJf "$BUNDLE/bundle.tar.xz" bin lib golden
ls -la "$BUNDLE/bundle.tar.xz"
