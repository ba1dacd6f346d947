// jetmoe_kernel_ab: the interleaved kernels (Q8_0R / Q4_0R / Q4_KR, prefill tile or one-token
// loop) of two revisions in one process, called in turn. On a noisy VM the speed of the machine
// moves 20-30% between minutes, more than most kernel changes gain; in one process, with the two
// calls alternating (and their order swapped every other round), the noise hits both, and the
// median of the per-round ratios shows a few percent (docs/performance.md has its figures).
//
//   "new":  this build's kernels (jetmoe_core, the working tree);
//   "base": the same kernels of the git revision JETMOE_KERNEL_AB_BASE (default HEAD), extracted
//           when CMake configures and compiled with their entry points renamed base_* (bench/
//           CMakeLists.txt). The two must agree on MatArgs and the activation blocks: checked
//           below against sizes the base objects report.
//
// Both run the active ISA's kernels (JETMOE_FORCE_ISA=avx2 picks the AVX2 ones on an AVX-512
// CPU) on the same quantized random weights (repacked like the runtime's) and activations; the
// largest difference between their outputs is printed (0 where the change keeps the arithmetic).
//
//   jetmoe_kernel_ab prefill q4_k --tokens 128
//   jetmoe_kernel_ab decode q4_k --from memory --threads 2
//   jetmoe_kernel_ab decode q4_k --from memory --threads 2 --same-bytes   (base: Q4_0R on its bytes)
//   jetmoe_kernel_ab decode q4_k --from memory --threads 2 --same-bytes --base-two-streams 0
//   jetmoe_kernel_ab decode q8_0 --from memory --threads 2 --probe   (each side's GB/s over `jetmoe
//                                                                    bench`'s read probe, per round)
// (--l2 / --l1 / --two-streams set the new side's one-token plan, --base-* the base's: the runtime's
// plan for the type otherwise, the same for both sides.)
// A base with another weight layout reads the weights wrongly: its speed still compares, its
// outputs do not.
#include <CLI/CLI.hpp>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli/cmd_bench_probes.h"
#include "loader/aligned_buffer.h"
#include "ops/cpu/cpu_isa.h"
#include "quant/qdot.h"
#include "quant/qdot_kernels.h"
#include "quant/qtypes.h"
#include "quant/quantize.h"
#include "quant/repack.h"

namespace jetmoe::qdot_detail {
// The base revision's kernels (bench/CMakeLists.txt renames them) and its struct sizes.
void base_avx2_matvec_q8_0r(const MatArgs&);
void base_avx2_matvec_q4_0r(const MatArgs&);
void base_avx2_matvec_q4_kr(const MatArgs&);
void base_avx2_matmul_q8_0r(const MatArgs&);
void base_avx2_matmul_q4_0r(const MatArgs&);
void base_avx2_matmul_q4_kr(const MatArgs&);
void base_avx512_matvec_q8_0r(const MatArgs&);
void base_avx512_matvec_q4_0r(const MatArgs&);
void base_avx512_matvec_q4_kr(const MatArgs&);
void base_avx512_matmul_q8_0r(const MatArgs&);
void base_avx512_matmul_q4_0r(const MatArgs&);
void base_avx512_matmul_q4_kr(const MatArgs&);
std::vector<size_t> base_abi_sizes();
}  // namespace jetmoe::qdot_detail

namespace jetmoe {
namespace {

using qdot_detail::KernelFn;
using qdot_detail::MatArgs;

constexpr int64_t kRows = 5632, kCols = 2048;  // an MLP expert's W_in: JetMoE-8B's largest matrix
constexpr int kMatricesFromMemory = 40;        // 260 MB at int4, 490 MB at int8: far above any L3
constexpr int64_t kRowsFromL2 = 128;           // 147 KB at int4
constexpr int kCallsFromL2 = 2000;

struct Options {
  std::string mode, type = "q4_k", from = "memory";
  int64_t tokens = 128;
  int rounds = 30, threads = 1;
  bool same_bytes = false;
  bool probe = false;
  bool one_matrix = false;
  bool per_round = false;
  // Each side's one-token plan; -1: decode_stream's for the type (the same-bytes base: Q4_0R's)
  struct Plan {
    long long l2 = -1, l1 = -1, two_streams = -1;
  } plan, base_plan;
};

void apply_plan(const Options::Plan& p, MatArgs& a) {
  if (p.l2 >= 0) a.prefetch = static_cast<size_t>(p.l2);
  if (p.l1 >= 0) a.prefetch_l1 = static_cast<size_t>(p.l1);
  if (p.two_streams >= 0) a.two_streams = p.two_streams != 0;
}

DType repacked_of(const std::string& type) {
  if (type == "q8_0") return DType::Q8_0R;
  if (type == "q4_0") return DType::Q4_0R;
  if (type == "q4_k") return DType::Q4_KR;
  throw std::invalid_argument("type '" + type + "': expected q8_0, q4_0 or q4_k");
}

KernelFn base_kernel(CpuIsa isa, DType t, bool decode) {
  using namespace qdot_detail;
  const bool avx512 = isa == CpuIsa::Avx512;
  if (isa != CpuIsa::Avx512 && isa != CpuIsa::Avx2)
    throw std::runtime_error("the active ISA is " + std::string(isa_name(isa)) + ": the interleaved kernels are AVX2 / AVX-512 code");
  switch (t) {
    case DType::Q8_0R:
      return decode ? (avx512 ? base_avx512_matvec_q8_0r : base_avx2_matvec_q8_0r)
                    : (avx512 ? base_avx512_matmul_q8_0r : base_avx2_matmul_q8_0r);
    case DType::Q4_0R:
      return decode ? (avx512 ? base_avx512_matvec_q4_0r : base_avx2_matvec_q4_0r)
                    : (avx512 ? base_avx512_matmul_q4_0r : base_avx2_matmul_q4_0r);
    default:
      return decode ? (avx512 ? base_avx512_matvec_q4_kr : base_avx2_matvec_q4_kr)
                    : (avx512 ? base_avx512_matmul_q4_kr : base_avx2_matmul_q4_kr);
  }
}

KernelFn new_kernel(CpuIsa isa, DType t, bool decode) {
  const qdot_detail::KernelTable& k = qdot_detail::kernel_table(isa);
  const int i = qdot_detail::kernel_index(t);
  return decode ? k.matvec[i] : k.matmul[i];
}

void check_abi() {
  const std::vector<size_t> here = {sizeof(MatArgs), sizeof(BlockQ8_0Z), sizeof(BlockQ8_KS), kQ4KRBlockBytes};
  if (qdot_detail::base_abi_sizes() != here)
    throw std::runtime_error("the base revision's MatArgs / activation blocks / Q4_KR super-block differ in size from this "
                             "build's: its kernels cannot be called from here");
}

// rows x kCols of type t (repacked), random weights quantized like the runtime's.
AlignedBuffer random_matrix(DType t, int64_t rows, uint32_t seed) {
  const size_t rb = dtype_row_bytes(t, kCols);
  AlignedBuffer m(rb * static_cast<size_t>(rows));
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-0.03f, 0.03f);
  std::vector<float> row(kCols);
  for (int64_t r = 0; r < rows; ++r) {
    for (float& v : row) v = u(rng);
    quantize_row_maxabs(file_type(t), row.data(), m.data() + static_cast<size_t>(r) * rb, kCols);
  }
  repack_rows(file_type(t), m.data(), rows, kCols);
  return m;
}

std::vector<uint8_t> random_activations(DType t, int64_t T, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(T * kCols));
  for (float& v : x) v = g(rng);
  std::vector<uint8_t> q(activation_row_bytes(t, kCols) * static_cast<size_t>(T));
  quantize_activation_rows(t, x.data(), kCols, q.data(), T, kCols);
  return q;
}

// f over `rows` rows of `a` (`stride` rows per matrix) on `threads` threads: each matrix's rows
// split evenly (whole 16-row groups), a barrier after each, as the runtime's weight loops.
void run_split(KernelFn f, const MatArgs& a, int64_t rows, int64_t per_matrix, int threads) {
  if (threads == 1) {
    for (int64_t m0 = 0; m0 < rows; m0 += per_matrix) {
      MatArgs s = a;
      s.r0 = m0;
      s.r1 = std::min(rows, m0 + per_matrix);
      f(s);
    }
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), n = omp_get_num_threads();
    for (int64_t m0 = 0; m0 < rows; m0 += per_matrix) {
      const int64_t len = std::min(rows, m0 + per_matrix) - m0;
      const int64_t share = (len / kInterleaveRows + n - 1) / n * kInterleaveRows;
      MatArgs s = a;
      s.r0 = m0 + std::min(len, t * share);
      s.r1 = m0 + std::min(len, (t + 1) * share);
      if (s.r0 < s.r1) f(s);
#pragma omp barrier
    }
  }
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int run(const Options& o) {
  check_abi();
  const CpuIsa isa = active_isa();
  const DType t = repacked_of(o.type);
  const bool decode = o.mode == "decode";
  const bool from_memory = decode && o.from == "memory";
  if (decode && o.from != "memory" && o.from != "l2") throw std::invalid_argument("--from '" + o.from + "': expected memory or l2");
  if (o.same_bytes && t != DType::Q4_KR) throw std::invalid_argument("--same-bytes: for q4_k only");
  if (o.probe && !from_memory) throw std::invalid_argument("--probe: for decode --from memory only");
  if (o.one_matrix && !from_memory) throw std::invalid_argument("--one-matrix: for decode --from memory only");
  const int64_t rows = !decode ? kRows : from_memory ? kRows * kMatricesFromMemory : kRowsFromL2;
  const int64_t T = decode ? 1 : o.tokens;
  const int calls = decode && !from_memory ? kCallsFromL2 : 1;

  AlignedBuffer W = random_matrix(t, rows, 1);
  std::vector<uint8_t> X = random_activations(t, T, 2);
  std::vector<float> ya(static_cast<size_t>(rows * T)), yb(ya.size());
  // the runtime's own arguments (and one-token plan) for both, then each side's overrides
  MatArgs a = qdot_detail::make_args(isa, t, W.data(), 0, rows, kCols, X.data(), T, ya.data(), rows, "base");
  MatArgs b = qdot_detail::make_args(isa, t, W.data(), 0, rows, kCols, X.data(), T, yb.data(), rows, "new");
  apply_plan(o.plan, b);
  KernelFn fa = base_kernel(isa, t, decode), fb = new_kernel(isa, t, decode);
  std::string base_name = "base";
  std::vector<uint8_t> X4;
  if (o.same_bytes) {  // base: the new Q4_0R kernel reading the Q4_KR matrix's bytes as Q4_0R rows
    const int64_t n4 = kCols;  // Q4_0 and Q4_K rows of kCols values are the same bytes (4.5 bits a value)
    static_assert(kCols / kQK8_0 * 18 == kCols / kQK_K * 144, "Q4_0 and Q4_K rows of kCols values differ in size");
    std::vector<float> x(static_cast<size_t>(n4), 0.5f);
    X4.resize(activation_row_bytes(DType::Q4_0R, n4));
    quantize_activation_row(DType::Q4_0R, x.data(), X4.data(), n4);
    a = qdot_detail::make_args(isa, DType::Q4_0R, W.data(), 0, rows, n4, X4.data(), 1, ya.data(), rows, "same bytes");
    fa = new_kernel(isa, DType::Q4_0R, true);
    base_name = "Q4_0R (same bytes)";
  }
  apply_plan(o.base_plan, a);

  const int64_t per_matrix = from_memory && !o.one_matrix ? kRows : rows;
  const int threads = decode ? o.threads : 1;
  auto timed = [&](KernelFn f, const MatArgs& m) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < calls; ++i) run_split(f, m, rows, per_matrix, threads);
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  timed(fa, a);  // warm-up, and the outputs to compare
  timed(fb, b);
  double maxd = 0;
  if (!o.same_bytes)
    for (size_t i = 0; i < ya.size(); ++i) maxd = std::max(maxd, static_cast<double>(std::fabs(ya[i] - yb[i])));

  // The read probe of `jetmoe bench` (cli/cmd_bench_probes.h) on the kernels' thread count, timed
  // after each round's pair: each side's GB/s over it, round by round, as bench's decode rows.
  std::unique_ptr<cli::ReadBandwidthProbe> probe;
  if (o.probe) {
    omp_set_num_threads(threads);
    probe = std::make_unique<cli::ReadBandwidthProbe>(size_t{1} << 30);
  }
  std::vector<double> ta, tb, ratio, probe_gbps, of_probe_a, of_probe_b;
  std::map<std::string, int> fastest_loop;  // how many rounds each read loop was the probe's fastest
  for (int r = 0; r < o.rounds; ++r) {
    double x, y;
    if (r % 2 == 0) {
      x = timed(fa, a);
      y = timed(fb, b);
    } else {
      y = timed(fb, b);
      x = timed(fa, a);
    }
    ta.push_back(x);
    tb.push_back(y);
    ratio.push_back(x / y);
    if (probe) {  // one pass: its fastest loop
      const cli::BandwidthResult p = probe->measure(1);
      probe_gbps.push_back(p.median_gbps);
      ++fastest_loop[p.loop];
    }
  }
  const double work = decode ? static_cast<double>(rows) * static_cast<double>(a.w_stride) * calls / 1e9   // GB
                             : 2.0 * static_cast<double>(rows) * kCols * static_cast<double>(T) / 1e9;  // GFLOP
  for (size_t r = 0; r < probe_gbps.size(); ++r) {
    of_probe_a.push_back(work / ta[r] / probe_gbps[r]);
    of_probe_b.push_back(work / tb[r] / probe_gbps[r]);
  }
  const char* unit = decode ? "GB/s" : "GFLOP/s";
  std::printf("%s %s, %s kernels, %s%s, %d round%s:\n", o.mode.c_str(), o.type.c_str(), isa_name(isa),
              decode ? (from_memory ? "from memory" : "from L2") : ("T" + std::to_string(T)).c_str(),
              decode ? (", " + std::to_string(threads) + " thread" + (threads > 1 ? "s" : "")).c_str() : "", o.rounds,
              o.rounds > 1 ? "s" : "");
  std::printf("  %-20s best %7.1f  median %7.1f %s\n", base_name.c_str(), work / *std::min_element(ta.begin(), ta.end()),
              work / median(ta), unit);
  std::printf("  %-20s best %7.1f  median %7.1f %s\n", "new", work / *std::min_element(tb.begin(), tb.end()), work / median(tb),
              unit);
  std::printf("  median per-round ratio new / %s: %.3f (min %.3f, max %.3f)\n", base_name.c_str(), median(ratio),
              *std::min_element(ratio.begin(), ratio.end()), *std::max_element(ratio.begin(), ratio.end()));
  if (probe) {
    std::printf("  read probe (1 GiB, each round's fastest loop) median %.1f GB/s (min %.1f, max %.1f)\n", median(probe_gbps),
                *std::min_element(probe_gbps.begin(), probe_gbps.end()), *std::max_element(probe_gbps.begin(), probe_gbps.end()));
    std::printf("  median per-round share of the probe: %s %.1f%%, new %.1f%%\n", base_name.c_str(), 100 * median(of_probe_a),
                100 * median(of_probe_b));
    std::printf("  the probe's fastest loop (rounds):");
    for (const auto& [name, n] : fastest_loop) std::printf(" %s (%d)", name.c_str(), n);
    std::printf("\n");
  }
  if (!o.same_bytes) std::printf("  largest output difference: %g\n", maxd);
  if (o.per_round) {
    // Plain column names ("base" is the side named above, e.g. "Q4_0R (same bytes)").
    const char* u = decode ? "gbps" : "gflops";
    std::printf("round,base_%s,new_%s%s\n", u, u, probe ? ",probe_gbps" : "");
    for (size_t r = 0; r < ta.size(); ++r) {
      std::printf("%zu,%.2f,%.2f", r, work / ta[r], work / tb[r]);
      if (probe) std::printf(",%.2f", probe_gbps[r]);
      std::printf("\n");
    }
  }
  return 0;
}

}  // namespace
}  // namespace jetmoe

int main(int argc, char** argv) {
  jetmoe::Options o;
  CLI::App app{"The interleaved kernels of this build against those of another git revision, in one process (bench/kernel_ab.cpp)"};
  app.require_subcommand(1);
  for (const char* mode : {"prefill", "decode"}) {
    CLI::App* s = app.add_subcommand(mode, std::string(mode) == "prefill" ? "The prefill tiles: 5632 x 2048 weights x --tokens"
                                                                           : "The one-token loops");
    s->add_option("type", o.type, "q8_0, q4_0 or q4_k (their repacked forms)")->required();
    s->add_flag("--per-round", o.per_round, "Also print every round's figures, as CSV");
    s->add_option("-r,--rounds", o.rounds, "Rounds of one call of each, in turn (default 30: from memory, identical kernels gave a median ratio of 0.93 in 6 rounds, 0.99-1.01 in 20)")->check(CLI::Range(1, 100000));
    if (std::string(mode) == "prefill") {
      s->add_option("-T,--tokens", o.tokens, "Tokens")->check(CLI::Range(1, 4096));
    } else {
      s->add_option("--from", o.from, "memory: 40 matrices 5632 x 2048 one after another; l2: 128 rows, 2000 calls");
      s->add_option("-t,--threads", o.threads, "OpenMP threads, each matrix's rows split between them")->check(CLI::Range(1, 1024));
      s->add_flag("--same-bytes", o.same_bytes, "q4_k: the base is this build's Q4_0R kernel on the same bytes");
      s->add_flag("--one-matrix", o.one_matrix, "--from memory: the 40 matrices' rows as one matrix (225280 x 2048), split once between the threads: no stream starts or barriers between matrices");
      s->add_flag("--probe", o.probe, "--from memory: after each round, `jetmoe bench`'s read probe (1 GiB, every loop once, the fastest counts); each side's GB/s over it");
      s->add_option("--l2", o.plan.l2, "The new kernel's L2 prefetch distance in bytes (default: this CPU's plan)");
      s->add_option("--l1", o.plan.l1, "The new kernel's L1 prefetch distance in bytes");
      s->add_option("--two-streams", o.plan.two_streams, "The new kernel's two-stream flag, 0 or 1")->check(CLI::Range(0, 1));
      s->add_option("--base-l2", o.base_plan.l2, "The base kernel's L2 prefetch distance in bytes (default: this CPU's plan)");
      s->add_option("--base-l1", o.base_plan.l1, "The base kernel's L1 prefetch distance in bytes");
      s->add_option("--base-two-streams", o.base_plan.two_streams, "The base kernel's two-stream flag, 0 or 1")->check(CLI::Range(0, 1));
    }
    s->callback([&o, mode] { o.mode = mode; });
  }
  CLI11_PARSE(app, argc, argv);
  try {
    return jetmoe::run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "jetmoe_kernel_ab: %s\n", e.what());
    return 1;
  }
}
