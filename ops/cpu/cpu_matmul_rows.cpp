// CpuBackend::matmul_row_jobs: matmuls split by weight rows over the worker team
// (ops/cpu/worker_team.h: OpenMP's thread count, without a kernel wake-up per loop), for
// quantized weights at any token count and float weights at few tokens (decode).
//
// All jobs of a group (e.g. the two experts a decode step selected) run in one parallel loop:
// the rows are cut into contiguous chunks (a few per thread, handed out dynamically so a thread
// that shares its core with another process simply takes fewer), and each chunk streams its
// weight rows sequentially. Quantized weights are never dequantized to float in memory: the
// activations are quantized once (int8 blocks) and the integer kernels of quant/qdot.h run.
#include <omp.h>

#include <algorithm>

#include "ops/cpu/cpu_backend.h"
#include "ops/cpu/float_dot.h"
#include "ops/cpu/worker_team.h"
#include "quant/qdot.h"

namespace jetmoe {
namespace {

// Chunks per thread: enough for dynamic balancing, few enough that each chunk is a long stream.
constexpr int64_t kChunksPerThread = 4;
// Chunk sizes are multiples of this many rows (a multiple of every kernel's row tile).
constexpr int64_t kRowQuantum = 16;

}  // namespace

void CpuBackend::matmul_row_jobs(const MatmulJob* jobs, size_t n_jobs) {
  // Quantize every job's activations first (T x cols elements, small next to the rows).
  act_off_.assign(n_jobs, 0);
  size_t act_bytes = 0;
  int64_t total_rows = 0, work = 0;
  for (size_t i = 0; i < n_jobs; ++i) {
    const MatmulJob& j = jobs[i];
    act_off_[i] = act_bytes;
    if (dtype_is_quantized(j.dtype)) act_bytes += activation_row_bytes(j.dtype, j.cols) * static_cast<size_t>(j.T);
    total_rows += j.rows;
    work += j.rows * j.cols * j.T;
  }
  act_q_.resize(act_bytes);
  WorkerTeam& team = WorkerTeam::shared();
  for (size_t i = 0; i < n_jobs; ++i) {
    const MatmulJob& j = jobs[i];
    if (!dtype_is_quantized(j.dtype)) continue;
    const size_t arb = activation_row_bytes(j.dtype, j.cols);
    uint8_t* dst = act_q_.data() + act_off_[i];
    // Prefill: many rows, worth the team (in blocks of 16 rows); decode: one row, not.
    const auto quantize = [&](int64_t b) {
      for (int64_t t = 16 * b; t < std::min(j.T, 16 * b + 16); ++t)
        quantize_activation_row(j.dtype, j.x + t * j.cols, dst + static_cast<size_t>(t) * arb, j.cols);
    };
    const int64_t blocks = (j.T + 15) / 16;
    if (j.T * j.cols >= 16 * kCpuParallelMinWork)
      team.run(blocks, quantize);
    else
      for (int64_t b = 0; b < blocks; ++b) quantize(b);
  }

  const bool parallel = work >= kCpuParallelMinWork;
  const int64_t threads = parallel ? omp_get_max_threads() : 1;
  int64_t chunk = (total_rows + threads * kChunksPerThread - 1) / (threads * kChunksPerThread);
  chunk = std::max(kRowQuantum, (chunk + kRowQuantum - 1) / kRowQuantum * kRowQuantum);
  chunks_.clear();
  for (size_t i = 0; i < n_jobs; ++i)
    for (int64_t r0 = 0; r0 < jobs[i].rows; r0 += chunk)
      chunks_.push_back({static_cast<int32_t>(i), r0, std::min(jobs[i].rows, r0 + chunk)});

  const FloatDotFn dot = float_dot_for(active_isa());
  const int64_t n_chunks = static_cast<int64_t>(chunks_.size());
  const auto run_chunk = [&](int64_t c) {
    const RowChunk& rc = chunks_[static_cast<size_t>(c)];
    const MatmulJob& j = jobs[rc.job];
    if (dtype_is_quantized(j.dtype)) {
      const uint8_t* xq = act_q_.data() + act_off_[static_cast<size_t>(rc.job)];
      if (j.T == 1)
        qmatvec(j.dtype, j.w, rc.r0, rc.r1, j.cols, xq, j.y);
      else
        qmatmul(j.dtype, j.w, rc.r0, rc.r1, j.cols, xq, j.T, j.y, j.ldy);
      return;
    }
    // Float rows: each weight row is read once and applied to all T (< kCpuGemmMinTokens) tokens.
    const size_t rb = dtype_row_bytes(j.dtype, static_cast<size_t>(j.cols));
    const uint8_t* base = static_cast<const uint8_t*>(j.w);
    float out[kCpuGemmMinTokens];
    for (int64_t r = rc.r0; r < rc.r1; ++r) {
      dot(j.dtype, base + static_cast<size_t>(r) * rb, j.x, j.cols, j.T, j.cols, out);
      for (int64_t t = 0; t < j.T; ++t) j.y[t * j.ldy + r] = out[t];
    }
  };
  if (parallel) {
    team.run(n_chunks, run_chunk);
  } else {
    for (int64_t c = 0; c < n_chunks; ++c) run_chunk(c);
  }
}

}  // namespace jetmoe
