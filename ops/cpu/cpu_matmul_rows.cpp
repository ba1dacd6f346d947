// CpuBackend::matmul_row_jobs: matmuls split by weight rows over the worker team
// (ops/cpu/worker_team.h: OpenMP's thread count, without a kernel wake-up per loop), for
// quantized weights at any token count and float weights at few tokens (decode).
//
// All jobs of a group (e.g. the two experts a decode step selected) run in one parallel loop:
// the rows are cut into contiguous chunks, long ones first and shorter ones last, handed out
// dynamically (a thread that shares its core with another process simply takes fewer), and each
// chunk streams its weight rows sequentially. Quantized weights are never dequantized to float
// in memory: the activations are quantized once (int8 blocks) and the integer kernels of
// quant/qdot.h run.
#include <omp.h>

#include <algorithm>

#include "ops/cpu/cpu_backend.h"
#include "ops/cpu/float_dot.h"
#include "ops/cpu/worker_team.h"
#include "quant/qdot.h"
#include "quant/stream_prefetch.h"

namespace jetmoe {
namespace {

// Row chunks are guided: each is 1/(kGuidedDivisor x threads) of the group's rows not yet cut
// (rounded to kRowQuantum, at least kMinChunkRows), so the first chunks are long streams and the
// last ones short, and the threads finish a loop within one short chunk of each other (equal
// chunks of 1/8 of the group left one thread up to 1/8 of a loop idle at its end).
constexpr int64_t kGuidedDivisor = 2;
// Chunk sizes are multiples of this many rows (a multiple of every kernel's row tile).
constexpr int64_t kRowQuantum = 16;
// The shortest chunk: 64 rows of a 2048-wide int4 matrix are 74 KB, a few microseconds of
// streaming against well under a microsecond to claim and start a chunk.
constexpr int64_t kMinChunkRows = 64;
// Activation quantization: pieces of about this many elements (a multiple of every activation
// block: 32 or 256), on the team from this many elements in all. Decode's activations are a few
// thousand values, microseconds of work, but serial work on the caller's thread is time the other
// threads wait; with the team's workers spinning between loops a loop costs well under that.
constexpr int64_t kQuantPieceElems = 1024;
constexpr int64_t kQuantParallelElems = 4096;
// How far before a loop's end its caller fetches the read_soon ranges: the last this many bytes
// of weight rows (both threads' share) are a few microseconds of streaming, long enough for the
// ranges (~80 KB for JetMoE-8B's sublayer start) to arrive, short enough for them to stay in L2.
constexpr size_t kReadSoonLeadBytes = size_t{512} << 10;

}  // namespace

void CpuBackend::matmul_row_jobs(const MatmulJob* jobs, size_t n_jobs) {
  // Quantize every job's activations first (T x cols elements, small next to the rows). Jobs
  // that read the same activations in the same format (the selected experts of a decode step,
  // all fed the same normalised hidden state) share one quantized copy.
  act_off_.assign(n_jobs, 0);
  size_t act_bytes = 0;
  int64_t total_rows = 0, work = 0;
  quant_pieces_.clear();
  int64_t quant_elems = 0;
  for (size_t i = 0; i < n_jobs; ++i) {
    const MatmulJob& j = jobs[i];
    total_rows += j.rows;
    work += j.rows * j.cols * j.T;
    if (!dtype_is_quantized(j.dtype)) continue;
    size_t same = i;
    for (size_t k = 0; k < i && same == i; ++k)
      if (jobs[k].x == j.x && jobs[k].T == j.T && jobs[k].cols == j.cols && jobs[k].dtype == j.dtype) same = k;
    if (same != i) {
      act_off_[i] = act_off_[same];
      continue;
    }
    act_off_[i] = act_bytes;
    act_bytes += activation_row_bytes(j.dtype, j.cols) * static_cast<size_t>(j.T);
    // Pieces of about kQuantPieceElems: 16-token blocks, or for few tokens column ranges.
    const int64_t tok_step = std::max<int64_t>(1, std::min<int64_t>(16, kQuantPieceElems / j.cols));
    const int64_t col_step = j.T < 16 && j.cols > kQuantPieceElems ? kQuantPieceElems : j.cols;
    for (int64_t t0 = 0; t0 < j.T; t0 += tok_step)
      for (int64_t c0 = 0; c0 < j.cols; c0 += col_step)
        quant_pieces_.push_back({static_cast<int32_t>(i), t0, std::min(j.T, t0 + tok_step), c0, std::min(j.cols, c0 + col_step)});
    quant_elems += j.T * j.cols;
  }
  act_q_.resize(act_bytes);
  WorkerTeam& team = WorkerTeam::shared();
  const auto quantize = [&](int64_t p) {
    const QuantPiece& q = quant_pieces_[static_cast<size_t>(p)];
    const MatmulJob& j = jobs[q.job];
    const size_t arb = activation_row_bytes(j.dtype, j.cols);
    // Activation blocks are independent, so a column range is its own shorter row.
    const size_t col_off = q.c0 ? activation_row_bytes(j.dtype, q.c0) : 0;
    for (int64_t t = q.t0; t < q.t1; ++t)
      quantize_activation_row(j.dtype, j.x + t * j.cols + q.c0,
                              act_q_.data() + act_off_[static_cast<size_t>(q.job)] + static_cast<size_t>(t) * arb + col_off,
                              q.c1 - q.c0);
  };
  team.run(static_cast<int64_t>(quant_pieces_.size()), quantize, quant_elems >= kQuantParallelElems);

  const bool parallel = work >= kCpuParallelMinWork;
  const int64_t threads = parallel ? omp_get_max_threads() : 1;
  chunks_.clear();
  int64_t left = total_rows;
  for (size_t i = 0; i < n_jobs; ++i)
    for (int64_t r0 = 0; r0 < jobs[i].rows;) {
      int64_t chunk = (left / (kGuidedDivisor * threads) + kRowQuantum - 1) / kRowQuantum * kRowQuantum;
      chunk = std::min(std::max(chunk, kMinChunkRows), jobs[i].rows - r0);
      chunks_.push_back({static_cast<int32_t>(i), r0, r0 + chunk});
      r0 += chunk;
      left -= chunk;
    }

  const FloatDotFn dot = float_dot_for(active_isa());
  const int64_t n_chunks = static_cast<int64_t>(chunks_.size());
  // The read_soon ranges: the caller fetches them when it claims one of the chunks that hold the
  // loop's last kReadSoonLeadBytes of weight rows, or else once it has no more chunks to claim.
  tail_reads_.swap(read_soon_);
  read_soon_.clear();
  int64_t lead_chunk = n_chunks;
  for (size_t after = 0; !tail_reads_.empty() && lead_chunk > 0; --lead_chunk) {
    const RowChunk& rc = chunks_[static_cast<size_t>(lead_chunk - 1)];
    const MatmulJob& j = jobs[rc.job];
    after += static_cast<size_t>(rc.r1 - rc.r0) * dtype_row_bytes(j.dtype, static_cast<size_t>(j.cols));
    if (after > kReadSoonLeadBytes) break;
  }
  bool reads_fetched = tail_reads_.empty();  // touched by the caller only
  const WorkerTeam::Tail fetch_reads = [&] {
    if (reads_fetched) return;
    reads_fetched = true;
    for (const ReadRange& r : tail_reads_) prefetch_lines_l2(r.p, r.bytes);
  };
  const auto run_chunk = [&](int64_t c) {
    const RowChunk& rc = chunks_[static_cast<size_t>(c)];
    const MatmulJob& j = jobs[rc.job];
    if (c >= lead_chunk && !WorkerTeam::on_worker_thread()) fetch_reads();
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
  team.run(n_chunks, run_chunk, parallel, &fetch_reads);
}

void CpuBackend::read_soon(const ReadRange* ranges, size_t n) { read_soon_.assign(ranges, ranges + n); }

}  // namespace jetmoe
