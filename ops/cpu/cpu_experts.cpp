// The routed-expert ops of the CPU backend: top-k routing, the selected experts' products, and
// their gated sum into the residual stream.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "ops/cpu/cpu_backend.h"

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

// The items are sorted by expert (counting sort; experts nobody chose get no job). An expert
// chosen by one item reads that item's input row in place and writes its output row in place
// (every expert of a decode step); an expert chosen by several gets its rows gathered into one
// contiguous block, so its weights stream once for all of them (prefill), and scattered back.
// All experts (and `extra`) go to matmul_group together: one parallel region.
void CpuBackend::expert_matmul(const float* x, int64_t T, int64_t k, bool per_slot, const int32_t* experts,
                               const WeightView& W, float* y, const MatmulJob* extra) {
  if (W.shape.size() != 3) throw std::invalid_argument("expert_matmul: '" + W.name + "' is not an [E, out, in] tensor");
  const int64_t E = W.shape[0], out = W.shape[1], in = W.shape[2], n = T * k;
  const size_t expert_bytes = static_cast<size_t>(out) * W.row_bytes();
  expert_begin_.assign(static_cast<size_t>(E + 1), 0);
  for (int64_t i = 0; i < n; ++i) {
    if (experts[i] < 0 || experts[i] >= E)
      throw std::out_of_range("expert_matmul: expert id " + std::to_string(experts[i]) + " outside 0.." +
                              std::to_string(E - 1) + " for '" + W.name + "'");
    ++expert_begin_[static_cast<size_t>(experts[i]) + 1];
  }
  for (int64_t e = 0; e < E; ++e) expert_begin_[static_cast<size_t>(e + 1)] += expert_begin_[static_cast<size_t>(e)];
  order_.resize(static_cast<size_t>(n));
  fill_.assign(expert_begin_.begin(), expert_begin_.end() - 1);
  for (int64_t i = 0; i < n; ++i) order_[static_cast<size_t>(fill_[static_cast<size_t>(experts[i])]++)] = static_cast<int32_t>(i);

  auto input_row = [&](int64_t item) { return x + (per_slot ? item : item / k) * in; };
  int64_t gathered = 0;  // rows of experts with more than one item
  for (int64_t e = 0; e < E; ++e) {
    const int64_t m = expert_begin_[static_cast<size_t>(e + 1)] - expert_begin_[static_cast<size_t>(e)];
    if (m > 1) gathered += m;
  }
  gx_.resize(static_cast<size_t>(gathered * in));
  gy_.resize(static_cast<size_t>(gathered * out));
  expert_jobs_.clear();
  if (extra) expert_jobs_.push_back(*extra);
  int64_t g = 0;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t b = expert_begin_[static_cast<size_t>(e)], m = expert_begin_[static_cast<size_t>(e + 1)] - b;
    if (m == 0) continue;
    MatmulJob j;
    j.T = m;
    j.w = static_cast<const uint8_t*>(W.data) + static_cast<size_t>(e) * expert_bytes;
    j.dtype = W.dtype;
    j.rows = out;
    j.cols = in;
    j.ldy = out;
    if (m == 1) {
      const int64_t item = order_[static_cast<size_t>(b)];
      j.x = input_row(item);
      j.y = y + item * out;
    } else {
      for (int64_t r = 0; r < m; ++r)
        std::copy_n(input_row(order_[static_cast<size_t>(b + r)]), in, gx_.data() + (g + r) * in);
      j.x = gx_.data() + g * in;
      j.y = gy_.data() + g * out;
      g += m;
    }
    expert_jobs_.push_back(j);
  }
  matmul_group(expert_jobs_.data(), expert_jobs_.size());
  g = 0;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t b = expert_begin_[static_cast<size_t>(e)], m = expert_begin_[static_cast<size_t>(e + 1)] - b;
    if (m <= 1) continue;
    for (int64_t r = 0; r < m; ++r)
      std::copy_n(gy_.data() + (g + r) * out, out, y + static_cast<int64_t>(order_[static_cast<size_t>(b + r)]) * out);
    g += m;
  }
}

void CpuBackend::combine_experts(const float* y, const float* gates, int64_t T, int64_t k, int64_t n, const float* bias,
                                 float* x) {
  for (int64_t t = 0; t < T; ++t) {
    float* xr = x + t * n;
    for (int64_t i = 0; i < n; ++i) {
      float acc = 0.0f;
      for (int64_t j = 0; j < k; ++j) acc += gates[t * k + j] * y[(t * k + j) * n + i];
      xr[i] += acc + bias[i];
    }
  }
}

}  // namespace jetmoe
