#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan; they link only the parsers' sources, the
# library jetmoe_fuzz_parsers of CMakeLists.txt) and runs each for FUZZ_SECONDS (default 60)
# on a scratch copy of its seed corpus. Exits non-zero if any target finds a crash.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
# -O1 with line tables only, as the sanitizer build of scripts/test.sh (libFuzzer's usual level).
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
  -DJETMOE_FUZZ=ON -DJETMOE_BUILD_TESTS=OFF >/dev/null
targets=()
for src in tests/fuzz/fuzz_*.cpp; do targets+=("$(basename "$src" .cpp)"); done
cmake --build build-fuzz -j"${JOBS:-$(nproc)}" --target "${targets[@]}"
status=0
for t in "${targets[@]}"; do
  corpus=build-fuzz/corpus-$t
  rm -rf "$corpus" && mkdir -p "$corpus"
  [ -d "tests/fuzz/seeds/$t" ] && cp tests/fuzz/seeds/"$t"/* "$corpus"/ 2>/dev/null || true
  echo "fuzz: $t for ${FUZZ_SECONDS}s"
  if ! ASAN_OPTIONS=detect_leaks=1 ./build-fuzz/tests/fuzz/"$t" -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=4096 \
       -artifact_prefix=build-fuzz/"$t"- -print_final_stats=1 "$corpus" > build-fuzz/"$t".log 2>&1; then
    echo "fuzz: $t FOUND A CRASH (see build-fuzz/$t.log and build-fuzz/$t-crash-*)" >&2
    tail -40 build-fuzz/"$t".log >&2
    status=1
  else
    grep -E "stat::number_of_executed_runs|cov:" build-fuzz/"$t".log | tail -2 | sed "s/^/fuzz: $t: /"
  fi
done
exit $status
