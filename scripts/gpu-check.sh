#!/usr/bin/env bash
# The CUDA backend's checks on a GPU machine, from a bundle made here by scripts/gpu-bundle.sh
# (a CUDA build's jetmoe and jetmoe_tests plus the Debian libraries they link, and the golden
# checkpoints): the cross-backend op test and the golden checkpoints on CUDA, then `jetmoe bench`
# at JetMoE-8B's shape. Logs go to $OUT (or ./gpu-check-out).
#   BUNDLE (default .gpu-bundle): the bundle folder; BENCH_TYPES (default bf16,q4_0,q4_k,q8_0);
#   BENCH_LAYERS (default 24); BENCH_REPS (default 3).
set -uo pipefail
cd "$(dirname "$0")/.."
BUNDLE=${BUNDLE:-.gpu-bundle}
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT" /tmp/jetmoe-gpu
tar -C /tmp/jetmoe-gpu -xJf "$BUNDLE/bundle.tar.xz" || exit 1
export LD_LIBRARY_PATH=/tmp/jetmoe-gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export JETMOE_GOLDEN_DIR=/tmp/jetmoe-gpu/golden OMP_NUM_THREADS=${OMP_NUM_THREADS:-16}
bin=/tmp/jetmoe-gpu/bin
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv 2>&1 | tee "$OUT/gpu.txt"
echo "== cross-backend op test + golden checkpoints on every usable device"
"$bin/jetmoe_tests" --gtest_filter='*BackendOps*:BackendGolden*:BackendDevices*' 2>&1 | tee "$OUT/backend_ops.log"
echo "== the CUDA op tests under compute-sanitizer memcheck (out-of-bounds and misaligned accesses)"
timeout 240 compute-sanitizer --tool memcheck --error-exitcode 9 "$bin/jetmoe_tests" --gtest_brief=1 \
  --gtest_filter='*BackendOps*/cuda:BackendGolden*' 2>&1 | tail -15 | tee "$OUT/memcheck.log"
echo "== bench"
"$bin/jetmoe" bench --synth --device cuda --layers "${BENCH_LAYERS:-24}" --quant "${BENCH_TYPES:-bf16,q4_0,q4_k,q8_0}" \
  -t 16 -p 512 -n 128 -r "${BENCH_REPS:-3}" --bw-gib 4 --json-file "$OUT/bench.json" 2>"$OUT/bench.err" | tee "$OUT/bench.md"
tail -5 "$OUT/bench.err"
echo "== decode without CUDA graphs (JETMOE_CUDA_GRAPHS=0), for comparison"
JETMOE_CUDA_GRAPHS=0 "$bin/jetmoe" bench --synth --device cuda --layers "${BENCH_LAYERS:-24}" --quant bf16,q4_0 \
  -t 16 -p 0 -n 128 -r "${BENCH_REPS:-3}" --bw-gib 4 --json-file "$OUT/bench_nograph.json" 2>/dev/null | tee "$OUT/bench_nograph.md"
