// The routed-expert ops of the CPU backend: top-k routing, the selected experts' products, and
// their gated sum into the residual stream.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "ops/cpu/cpu_backend.h"
#include "ops/cpu/float_dot.h"
#include "ops/cpu/worker_team.h"

namespace jetmoe {

// Section 5: logits in float32, the k largest (lower index first on ties), gates = softmax over
// the k selected logits only.
void CpuBackend::route_topk(const float* logits, int64_t T, int64_t E, int64_t k, int32_t* experts, float* gates) {
  for (int64_t t = 0; t < T; ++t) {
    const float* s = logits + t * E;
    int32_t* sel = experts + t * k;
    for (int64_t j = 0; j < k; ++j) {
      int32_t best = -1;
      for (int32_t e = 0; e < E; ++e) {
        if (std::find(sel, sel + j, e) != sel + j) continue;
        if (best < 0 || s[e] > s[best]) best = e;
      }
      sel[j] = best;
    }
    const float mx = s[sel[0]];
    float sum = 0.0f;
    for (int64_t j = 0; j < k; ++j) sum += std::exp(s[sel[j]] - mx);
    for (int64_t j = 0; j < k; ++j) gates[t * k + j] = std::exp(s[sel[j]] - mx) / sum;
  }
}

// Decode's sublayer start. The router's E float rows (64 KB for JetMoE-8B) are in no cache by
// then unless read_soon named them: a layer streams tens of MB between two routers, and one core
// reads them at its miss-limited rate (~5 us on the Xeon VM, with the memory bus otherwise idle).
// Named, the last loop's caller fetched them into its L2 and this thread computes every logit
// (sublayer start 9.2 -> 6.4 us); not named, half the rows on each of two threads fetch them in
// about half the time. The rows go through the kernel four at a time (float_dot.h,
// FloatDotRowsFn): each logit is the same bits as matmul's row dot product.
void CpuBackend::norm_route(const float* x, int64_t T, int64_t n, const float* gain, float eps, const WeightView& router,
                            int64_t k, float* a, float* logits, int32_t* experts, float* gates) {
  if (T != 1 || dtype_is_quantized(router.dtype) || router.cols() != n)
    return Backend::norm_route(x, T, n, gain, eps, router, k, a, logits, experts, gates);
  rms_norm(x, T, n, gain, eps, a);
  const int64_t E = router.rows();
  const FloatDotRowsFn dot_rows = float_dot_rows_for(active_isa());
  const auto* base = static_cast<const uint8_t*>(router.data);
  const size_t rb = router.row_bytes();
  const bool fetched = std::any_of(tail_reads_.begin(), tail_reads_.end(),
                                   [&](const ReadRange& r) { return r.p == router.data; });
  const int64_t parts = fetched ? 1 : 2;
  WorkerTeam::shared().run(parts, [&](int64_t part) {
    const int64_t e0 = part * E / parts, e1 = (part + 1) * E / parts;
    dot_rows(router.dtype, base + static_cast<size_t>(e0) * rb, rb, e1 - e0, a, n, logits + e0);
  });
  route_topk(logits, T, E, k, experts, gates);
}

namespace {

// Copies rows: dst row r = src row row_of(r) (gather) or dst row row_of(r) = src row r
// (scatter), n floats each, in parallel when there is enough to copy (a 512-token prompt moves
// tens of MB per sublayer).
template <typename RowOf>
void copy_rows(int64_t rows, int64_t n, const float* src, float* dst, RowOf row_of, bool gather) {
#pragma omp parallel for schedule(static) if (rows * n >= (int64_t{1} << 18))
  for (int64_t r = 0; r < rows; ++r) {
    if (gather)
      std::copy_n(src + row_of(r) * n, n, dst + r * n);
    else
      std::copy_n(src + r * n, n, dst + row_of(r) * n);
  }
}

// Expert e of the stacked [E, out, in] tensor W applied to T rows at x, into rows of y.
MatmulJob expert_job(const WeightView& W, int64_t e, const float* x, int64_t T, float* y) {
  const int64_t out = W.shape[1], in = W.shape[2];
  MatmulJob j;
  j.x = x;
  j.T = T;
  j.w = static_cast<const uint8_t*>(W.data) + static_cast<size_t>(e) * static_cast<size_t>(out) * W.row_bytes();
  j.dtype = W.dtype;
  j.rows = out;
  j.cols = in;
  j.y = y;
  j.ldy = out;
  return j;
}

}  // namespace

// Counting sort of the T*k items by the expert they chose: order_ lists the items expert by
// expert, expert_begin_[e] .. expert_begin_[e+1] are expert e's; experts nobody chose get an empty
// range and are never touched.
void CpuBackend::group_items(const int32_t* experts, int64_t n, int64_t E, const std::string& what) {
  expert_begin_.assign(static_cast<size_t>(E + 1), 0);
  for (int64_t i = 0; i < n; ++i) {
    if (experts[i] < 0 || experts[i] >= E)
      throw std::out_of_range("expert id " + std::to_string(experts[i]) + " outside 0.." +
                              std::to_string(E - 1) + " for '" + what + "'");
    ++expert_begin_[static_cast<size_t>(experts[i]) + 1];
  }
  for (int64_t e = 0; e < E; ++e) expert_begin_[static_cast<size_t>(e + 1)] += expert_begin_[static_cast<size_t>(e)];
  order_.resize(static_cast<size_t>(n));
  fill_.assign(expert_begin_.begin(), expert_begin_.end() - 1);
  for (int64_t i = 0; i < n; ++i) order_[static_cast<size_t>(fill_[static_cast<size_t>(experts[i])]++)] = static_cast<int32_t>(i);
}

// One job per chosen expert over rows [b, e) of an expert-ordered input xs / output ys (rows of
// `in` / `out` floats), all of them (and `extra`) in one matmul_group: one parallel region.
void CpuBackend::run_grouped(const WeightView& W, const float* xs, float* ys, const MatmulJob* extra) {
  const int64_t E = W.shape[0], out = W.shape[1], in = W.shape[2];
  expert_jobs_.clear();
  if (extra) expert_jobs_.push_back(*extra);
  for (int64_t e = 0; e < E; ++e) {
    const int64_t b = expert_begin_[static_cast<size_t>(e)], m = expert_begin_[static_cast<size_t>(e + 1)] - b;
    if (m > 0) expert_jobs_.push_back(expert_job(W, e, xs + b * in, m, ys + b * out));
  }
  matmul_group(expert_jobs_.data(), expert_jobs_.size());
}

// Decode (every chosen expert has one item): each job reads its input row and writes its output
// row in place, no copies. Otherwise the rows are gathered into expert order, so each expert's
// weights stream once for all its rows, and the outputs scattered back.
void CpuBackend::expert_matmul(const float* x, int64_t T, int64_t k, bool per_slot, const int32_t* experts,
                               const WeightView& W, float* y, const MatmulJob* extra) {
  if (W.shape.size() != 3) throw std::invalid_argument("expert_matmul: '" + W.name + "' is not an [E, out, in] tensor");
  const int64_t E = W.shape[0], out = W.shape[1], in = W.shape[2], n = T * k;
  group_items(experts, n, E, W.name);
  auto source_row = [&](int64_t r) -> int64_t {
    const int64_t item = order_[static_cast<size_t>(r)];
    return per_slot ? item : item / k;
  };
  bool single = true;  // every chosen expert has exactly one item
  for (int64_t e = 0; e < E && single; ++e)
    single = expert_begin_[static_cast<size_t>(e + 1)] - expert_begin_[static_cast<size_t>(e)] <= 1;
  if (single) {
    expert_jobs_.clear();
    if (extra) expert_jobs_.push_back(*extra);
    for (int64_t r = 0; r < n; ++r) {
      const int64_t item = order_[static_cast<size_t>(r)];
      expert_jobs_.push_back(expert_job(W, experts[item], x + source_row(r) * in, 1, y + item * out));
    }
    matmul_group(expert_jobs_.data(), expert_jobs_.size());
    return;
  }
  gx_.resize(static_cast<size_t>(n * in));
  gy_.resize(static_cast<size_t>(n * out));
  copy_rows(n, in, x, gx_.data(), source_row, true);
  run_grouped(W, gx_.data(), gy_.data(), extra);
  copy_rows(n, out, gy_.data(), y, [&](int64_t r) -> int64_t { return order_[static_cast<size_t>(r)]; }, false);
}

// Prompts: the tokens' rows are gathered into expert order once, z and h stay in that order
// between the two products (z and h here are expert-ordered), and only y is scattered back.
// Decode takes the copy-free path of expert_matmul.
void CpuBackend::expert_mlp(const float* x, int64_t T, int64_t k, const int32_t* experts, const WeightView& w_in,
                            const WeightView& w_out, float* z, float* h, float* y) {
  if (T == 1) {
    // Decode, copy-free (expert_matmul). A read_soon hint belongs to the second loop: what it
    // names is read after W_out's rows, and W_in's would evict it from L2 again.
    held_reads_.swap(read_soon_);
    read_soon_.clear();
    expert_matmul(x, T, k, false, experts, w_in, z, nullptr);
    silu_mul(z, T * k, w_out.shape.back(), h);
    read_soon_.swap(held_reads_);
    expert_matmul(h, T, k, true, experts, w_out, y, nullptr);
    return;
  }
  if (w_in.shape.size() != 3 || w_out.shape.size() != 3)
    throw std::invalid_argument("expert_mlp: '" + w_in.name + "' / '" + w_out.name + "' are not [E, out, in] tensors");
  const int64_t E = w_in.shape[0], H = w_in.shape[2], F = w_out.shape[2], out = w_out.shape[1], n = T * k;
  group_items(experts, n, E, w_in.name);
  gx_.resize(static_cast<size_t>(n * H));
  gy_.resize(static_cast<size_t>(n * out));
  copy_rows(n, H, x, gx_.data(), [&](int64_t r) -> int64_t { return order_[static_cast<size_t>(r)] / k; }, true);
  run_grouped(w_in, gx_.data(), z, nullptr);
  silu_mul(z, n, F, h);
  run_grouped(w_out, h, gy_.data(), nullptr);
  copy_rows(n, out, gy_.data(), y, [&](int64_t r) -> int64_t { return order_[static_cast<size_t>(r)]; }, false);
}

// Column pieces with the slot loop outside, so each loop over a piece is a plain vector loop;
// every element still sums gate 0's term, gate 1's, ..., then adds bias, as the reference order.
void CpuBackend::combine_experts(const float* y, const float* gates, int64_t T, int64_t k, int64_t n, const float* bias,
                                 float* x) {
  constexpr int64_t kPiece = 256;
  float acc[kPiece];
  for (int64_t t = 0; t < T; ++t) {
    float* xr = x + t * n;
    for (int64_t i0 = 0; i0 < n; i0 += kPiece) {
      const int64_t m = std::min(kPiece, n - i0);
      std::fill_n(acc, m, 0.0f);
      for (int64_t j = 0; j < k; ++j) {
        const float g = gates[t * k + j];
        const float* yr = y + (t * k + j) * n + i0;
        for (int64_t i = 0; i < m; ++i) acc[i] += g * yr[i];
      }
      for (int64_t i = 0; i < m; ++i) xr[i0 + i] += acc[i] + bias[i0 + i];
    }
  }
}

}  // namespace jetmoe
