#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs the Debian packages (no-op when present),
# builds, runs the unit/golden/end-to-end tests, the loader, parser and kernel tests again under
# AddressSanitizer + UBSan, the worker team's and row lanes' tests under ThreadSanitizer, and each
# fuzz target for a bounded time. Exits non-zero on any failure.
#   FUZZ_SECONDS (default 30) bounds each fuzz target; JOBS (default: nproc) the build parallelism.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc)}
FUZZ_SECONDS=${FUZZ_SECONDS:-30}

bash scripts/install-deps.sh
# Minutes:seconds since the start, printed after each phase (CI's budget is well under 30 minutes).
elapsed() { printf '== %s done at %d:%02d\n' "$1" $((SECONDS / 60)) $((SECONDS % 60)); }

# ccache, for the CUDA build's sake: its C++ sources compile with the release build's command
# lines (CMakeLists.txt), so it takes their objects instead of compiling them a second time. The
# cache lives in the build folder: nothing outside the checkout is written.
LAUNCHER=()
if command -v ccache >/dev/null; then
  export CCACHE_DIR="$PWD/build-ccache"
  LAUNCHER=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi

echo "== release build + tests"
# With the benchmark tools (bench/), which nothing else would compile: ctest runs each for a
# second (Bench.*: they start and time their kernels), so that they cannot rot unseen.
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DJETMOE_BUILD_BENCH=ON "${LAUNCHER[@]}" >/dev/null
cmake --build build -j"$JOBS"
# One test at a time: the end-to-end chat (pseudo-terminal) and server tests are timing-sensitive
# and pick free loopback ports; running them beside each other on 2 cores made them flaky.
ctest --test-dir build --output-on-failure -j1 2>&1 | tee build/ctest.log
main_passed=$(grep -Eo '[0-9]+ tests failed out of [0-9]+' build/ctest.log | awk '{print $6 - $1}')
main_failed=$(grep -Eo '[0-9]+ tests failed out of [0-9]+' build/ctest.log | awk '{print $1}')
elapsed "release build + tests"

echo "== CUDA build (-DJETMOE_CUDA=ON): compile and link; without a GPU its tests check the CPU fallback"
# The CUDA backend's own kernels run only on a GPU machine (scripts/gpu-check.sh); here the build
# must compile and link, the cross-backend harness runs against the CPU, and --device cuda must
# fall back with a notice.
NVCC=$(command -v nvcc || { [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda/bin/nvcc; } || true)
cuda_passed=0
if [ -n "$NVCC" ]; then
  cmake -S . -B build-cuda -DCMAKE_BUILD_TYPE=Release -DJETMOE_CUDA=ON -DCMAKE_CUDA_COMPILER="$NVCC" \
    "${LAUNCHER[@]}" >/dev/null
  cmake --build build-cuda -j"$JOBS" --target jetmoe_backend_tests
  OMP_NUM_THREADS=2 OMP_WAIT_POLICY=passive ./build-cuda/tests/jetmoe_backend_tests --gtest_brief=1 \
    --gtest_filter='*BackendOps*:Backend*:Cli.DeviceCuda*:*GoldenTest*' 2>&1 | tee build-cuda/gtest.log
  grep -q 'FAILED' build-cuda/gtest.log && { echo "CUDA build tests failed"; exit 1; }
  cuda_passed=$(grep -Eo 'PASSED  \] [0-9]+' build-cuda/gtest.log | awk '{print $NF}')
else
  echo "no nvcc on this machine: the CUDA build is skipped"
fi
elapsed "CUDA build + tests"

echo "== sanitizer build (ASan + UBSan): loader, parsers, kernels, ops, routing, the golden forward pass and serve's error replies"
# -O1 with line tables only: half the compile time of -O2 -g (this build was 14 of the suite's
# 23 minutes on 2 cores), and sanitizer reports still name file and line. It builds only
# jetmoe_sanitizer_tests and jetmoe (tests/CMakeLists.txt says which tests): on the Zen 5 VM,
# 2 cores, about 410 s where the whole jetmoe_tests took about 520 s.
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
  -DJETMOE_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$JOBS" --target jetmoe_sanitizer_tests
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 OMP_NUM_THREADS=2 OMP_WAIT_POLICY=passive \
  ./build-asan/tests/jetmoe_sanitizer_tests --gtest_brief=1 2>&1 | tee build-asan/gtest.log
asan_passed=$(grep -Eo 'PASSED  \] [0-9]+' build-asan/gtest.log | awk '{print $NF}')
elapsed "sanitizer build + tests"

echo "== ThreadSanitizer: the worker team, the row lanes and the decode row loops (lock-free claims and commits;"
echo "   ops/cpu/worker_team.h, row_lanes.h, decode_row_loops.h)"
# Built on its own: libgomp's regions elsewhere would drown TSan in false reports.
g++ -std=c++20 -O1 -g -fsanitize=thread -fopenmp -I. -Itests ops/cpu/worker_team.cpp tests/ops/worker_team_test.cpp \
  ops/cpu/row_lanes.cpp tests/ops/row_lanes_test.cpp ops/cpu/decode_row_loops.cpp tests/ops/decode_row_loops_test.cpp \
  -lgtest -lgtest_main -o build/worker_team_tsan
TSAN_OPTIONS=halt_on_error=1 ./build/worker_team_tsan --gtest_brief=1 2>&1 | tee build/worker_team_tsan.log
tsan_passed=$(grep -Eo 'PASSED  \] [0-9]+' build/worker_team_tsan.log | awk '{print $NF}')
elapsed "ThreadSanitizer"

echo "== fuzzing (${FUZZ_SECONDS}s per target)"
FUZZ_SECONDS=$FUZZ_SECONDS bash scripts/fuzz.sh
fuzz_targets=$(ls tests/fuzz/fuzz_*.cpp | wc -l)
elapsed "fuzzing"

echo "summary: $((${main_passed:-0} + ${cuda_passed:-0} + ${asan_passed:-0} + ${tsan_passed:-0} + fuzz_targets)) passed, ${main_failed:-0} failed"
