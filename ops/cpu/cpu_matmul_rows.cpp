// CpuBackend::matmul_row_jobs: matmuls split by weight rows over the worker team
// (ops/cpu/worker_team.h: OpenMP's thread count, without a kernel wake-up per loop), for
// quantized weights at any token count and float weights at few tokens (decode).
//
// All jobs of a group (e.g. the two experts a decode step selected) run in one parallel loop:
// each thread streams its own contiguous lane of the rows, equal in bytes, and then steals pieces
// from the backs of the others' (ops/cpu/row_lanes.h; a thread that shares its core with another
// process simply takes fewer). Quantized weights are never dequantized to float in memory: the
// activations are quantized once (int8 blocks) and the integer kernels of quant/qdot.h run.
#include <omp.h>

#include <algorithm>

#include "ops/cpu/cpu_backend.h"
#include "ops/cpu/float_dot.h"
#include "ops/cpu/worker_team.h"
#include "quant/qdot.h"
#include "quant/stream_prefetch.h"

namespace jetmoe {
namespace {

// Pieces are multiples of this many rows (a multiple of every kernel's row tile).
constexpr int64_t kRowQuantum = 16;
// With several tokens, of this many: the interleaved layouts' prefill tiles take two 16-row
// groups at a time, and a piece with an odd number of groups ends in a one-group tile, which
// shares each activation broadcast with no second group. W_out's front pieces (256 KiB of Q4_KR
// rows of 5,632 values: 80 rows) were five groups. Ice Lake Xeon VM, two threads, kernels bench
// backend_matmul_w_out/*/T64, the two quanta alternating 4 times (maxima): Q4_0R 596 -> 630,
// Q4_KR 596 -> 620, Q8_0R 600 -> 617 GFLOP/s.
constexpr int64_t kRowQuantumTokens = 32;
// The smallest piece, in weight bytes: about 2 us of one core's streaming on the Xeon VM, against
// well under a microsecond to take a piece and start its stream. The threads end a loop within
// about one such piece of each other.
constexpr size_t kMinPieceBytes = size_t{32} << 10;
// The largest piece a thread takes from its own lane: a piece is contiguous with the thread's
// previous one, so cutting the lane finer costs a compare-and-swap per piece, and a thread the
// scheduler stops (another process on its core) holds back at most this much of its lane from
// the threads that would steal it (about 15 us of one core's streaming).
constexpr size_t kMaxFrontPieceBytes = size_t{256} << 10;
// The same in a step's one-token loops (ops/cpu/decode_row_loops.h), where the caller redoes the
// piece of a thread that stopped, so a front piece no longer bounds what a stopped thread holds
// back. Larger pieces mean fewer of them, each with its own locked commit: with 256 KiB the
// redoable loops were 0.5-2% slower per decoded token than the plain ones (Zen 5 VM, q4_0, 24
// layers, the two in turn every 4 tokens in one run), with 1 MiB 0.3-1.3% faster.
constexpr size_t kMaxFrontPieceBytesRedone = size_t{1} << 20;
// Activation quantization: pieces of about this many elements (a multiple of every activation
// block: 32 or 256), on the team from this many elements in all. Decode's groups (2,048 to
// 11,264 values: the two experts' gated values) take a few microseconds on one thread, less than
// sharing them costs: Zen 5 VM, 24-layer decode, 2 threads, cycles per quantization with the two
// thresholds in turn in one run: 8.20 kcyc from 4,096 values on the team against 5.96 on the
// caller alone (q4_0), 7.32 against 6.04 (q8_0). Prompts (512 x 2,048 values) stay on the team.
constexpr int64_t kQuantPieceElems = 1024;
constexpr int64_t kQuantParallelElems = 16384;
// How far before a loop's end its caller fetches the read_soon ranges: once at most this many
// bytes of weight rows are left to take (both threads' share) it is a few microseconds of
// streaming, long enough for the ranges (~80 KB for JetMoE-8B's sublayer start) to arrive, short
// enough for them to stay in L2.
constexpr size_t kReadSoonLeadBytes = size_t{512} << 10;

}  // namespace

void CpuBackend::matmul_row_jobs(const MatmulJob* jobs, size_t n_jobs) {
  // Quantize every job's activations first (T x cols elements, small next to the rows). Jobs
  // that read the same activations in the same format (the selected experts of a decode step,
  // all fed the same normalised hidden state) share one quantized copy.
  act_off_.assign(n_jobs, 0);
  size_t act_bytes = 0;
  int64_t work = 0;
  bool tokens = false;  // some job has several tokens: pieces of kRowQuantumTokens
  quant_pieces_.clear();
  int64_t quant_elems = 0;
  for (size_t i = 0; i < n_jobs; ++i) {
    const MatmulJob& j = jobs[i];
    work += j.rows * j.cols * j.T;
    tokens = tokens || j.T > 1;
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
  const int threads = parallel ? omp_get_max_threads() : 1;
  const bool redoable = in_step_ && threads > 1 && DecodeRowLoops::fits(jobs, n_jobs);

  // The read_soon ranges: the caller fetches them once a piece it takes leaves at most
  // kReadSoonLeadBytes of rows untaken, or else once it has no more pieces to take.
  tail_reads_.swap(read_soon_);
  read_soon_.clear();
  bool reads_fetched = tail_reads_.empty();  // touched by the caller only
  const WorkerTeam::Tail fetch_reads = [&] {
    if (reads_fetched) return;
    reads_fetched = true;
    for (const ReadRange& r : tail_reads_) prefetch_lines_l2(r.p, r.bytes);
  };
  if (redoable) {
    decode_loops_.run(jobs, n_jobs, {act_q_.data(), act_off_.data(), act_bytes},
                      {threads, kRowQuantum, kMinPieceBytes, kMaxFrontPieceBytesRedone}, {&fetch_reads, kReadSoonLeadBytes});
    return;
  }
  lanes_.clear_jobs();
  for (size_t i = 0; i < n_jobs; ++i) lanes_.add_job(jobs[i].rows, dtype_row_bytes(jobs[i].dtype, static_cast<size_t>(jobs[i].cols)));
  lanes_.plan(threads, tokens ? kRowQuantumTokens : kRowQuantum, kMinPieceBytes, kMaxFrontPieceBytes);
  const FloatDotFn dot = float_dot_for(active_isa());
  const auto run_piece = [&](const RowLanes::Piece& rc) {
    const MatmulJob& j = jobs[rc.job];
    if (!reads_fetched && !WorkerTeam::on_worker_thread() && lanes_.bytes_left() <= kReadSoonLeadBytes) fetch_reads();
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
  // One item per lane: whichever thread claims item k drains lane k first (the caller, claiming
  // first, usually lane 0), then steals from the others.
  team.run(threads, [&](int64_t lane) { lanes_.drain(static_cast<int>(lane), run_piece); }, parallel, &fetch_reads);
}

void CpuBackend::read_soon(const ReadRange* ranges, size_t n) { read_soon_.assign(ranges, ranges + n); }

// DecodeRowLoops' row kernel: rows [r0, r1) as a matrix of their own (the 16-row groups of the
// interleaved types keep their place, so any range of whole groups is one), into out.
void CpuBackend::decode_rows(const MatmulJob& j, const uint8_t* xq, int64_t r0, int64_t r1, float* out) {
  const size_t rb = dtype_row_bytes(j.dtype, static_cast<size_t>(j.cols));
  qmatvec(j.dtype, static_cast<const uint8_t*>(j.w) + static_cast<size_t>(r0) * rb, 0, r1 - r0, j.cols, xq, out);
}

void CpuBackend::begin_step(const StepShape&) { in_step_ = true; }

void CpuBackend::end_step(bool) {
  in_step_ = false;
  decode_loops_.wait_idle();
}

}  // namespace jetmoe
