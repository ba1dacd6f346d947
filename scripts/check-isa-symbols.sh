#!/usr/bin/env bash
# The binary must run on any x86-64: code compiled with AVX2/AVX-512 flags may only be reached
# through the kernel entry points chosen at run time. An inline function or template instantiated
# in a *_avx2/_avx512 object and exported as a weak symbol could be picked by the linker for the
# whole program, so those objects must export no weak (W/V) symbols. Arguments: object files.
set -euo pipefail
status=0
for obj in "$@"; do
  case "$obj" in *_avx2.cpp.o|*_avx512.cpp.o) ;; *) continue ;; esac
  weak=$(nm -C "$obj" | awk '$2 ~ /^[WVu]$/' || true)
  if [ -n "$weak" ]; then
    echo "$obj exports weak symbols compiled with SIMD flags:" >&2
    echo "$weak" >&2
    status=1
  else
    echo "ok: $(basename "$obj")"
  fi
done
exit $status
