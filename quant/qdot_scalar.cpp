// Reference (plain C++) dot-product kernels. Accumulate each block in int32, then one float
// multiply-add per block (Q8_0/Q4_0) or per super-block (Q4_K).
#include "quant/qdot_kernels.h"
#include "quant/qtypes.h"
#include "runtime/dtype.h"

#include <cstring>

namespace jetmoe::qdot_detail {
namespace {

float dot_q8_0(const BlockQ8_0* w, const BlockQ8_0* x, int64_t nb) {
  float acc = 0;
  for (int64_t b = 0; b < nb; ++b) {
    int32_t s = 0;
    for (int k = 0; k < kQK8_0; ++k) s += static_cast<int32_t>(w[b].qs[k]) * x[b].qs[k];
    acc += static_cast<float>(s) * (f16_to_f32(w[b].d) * f16_to_f32(x[b].d));
  }
  return acc;
}

float dot_q4_0(const BlockQ4_0* w, const BlockQ8_0* x, int64_t nb) {
  float acc = 0;
  for (int64_t b = 0; b < nb; ++b) {
    int32_t s = 0;
    for (int j = 0; j < 16; ++j) {
      s += ((w[b].qs[j] & 0x0f) - 8) * static_cast<int32_t>(x[b].qs[j]);
      s += ((w[b].qs[j] >> 4) - 8) * static_cast<int32_t>(x[b].qs[j + 16]);
    }
    acc += static_cast<float>(s) * (f16_to_f32(w[b].d) * f16_to_f32(x[b].d));
  }
  return acc;
}

// One Q4_K super-block against 256 int8 activations with scale dx: the scaled sub-block sums
// minus the mins times asum[j], the activations' sum over sub-block j (32 values).
float q4_k_block_dot(const BlockQ4_K& w, const int8_t* a, const int32_t (&asum)[8], float dx) {
  uint8_t sm[16];
  q4k_unpack_scales(w.scales, sm);
  int32_t sumi = 0, summ = 0;
  for (int c = 0; c < 4; ++c) {
    const uint8_t* q = w.qs + 32 * c;
    const int8_t* ac = a + 64 * c;
    int32_t s_lo = 0, s_hi = 0;
    for (int l = 0; l < 32; ++l) {
      s_lo += (q[l] & 0x0f) * static_cast<int32_t>(ac[l]);
      s_hi += (q[l] >> 4) * static_cast<int32_t>(ac[32 + l]);
    }
    sumi += sm[2 * c] * s_lo + sm[2 * c + 1] * s_hi;
  }
  for (int j = 0; j < 8; ++j) summ += sm[8 + j] * asum[j];
  const float d = f16_to_f32(w.d) * dx;
  const float dmin = f16_to_f32(w.dmin) * dx;
  return d * static_cast<float>(sumi) - dmin * static_cast<float>(summ);
}

float dot_q4_k(const BlockQ4_K* w, const BlockQ8_K* x, int64_t nb) {
  float acc = 0;
  for (int64_t b = 0; b < nb; ++b) {
    int32_t asum[8];
    for (int j = 0; j < 8; ++j) asum[j] = x[b].bsums[2 * j] + x[b].bsums[2 * j + 1];
    acc += q4_k_block_dot(w[b], x[b].qs, asum, x[b].d);
  }
  return acc;
}

// Repacked rows (16 rows interleaved, quant/qtypes.h): row i of `group`, against the BlockQ8_0Z
// activations of the repacked kernels. The integer sums are the GGUF blocks' own.
float dot_q8_0r(const uint8_t* group, int i, const BlockQ8_0Z* x, int64_t nb) {
  float acc = 0;
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t q[kQK8_0];
    const uint16_t dw = interleaved_row_block(group, kQK8_0, nb, b, i, q);
    int32_t s = 0;
    for (int k = 0; k < kQK8_0; ++k) s += static_cast<int32_t>(static_cast<int8_t>(q[k])) * x[b].qs[k];
    acc += static_cast<float>(s) * (f16_to_f32(dw) * x[b].d);
  }
  return acc;
}

float dot_q4_0r(const uint8_t* group, int i, const BlockQ8_0Z* x, int64_t nb) {
  float acc = 0;
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t q[kQK4_0 / 2];
    const uint16_t dw = interleaved_row_block(group, kQK4_0 / 2, nb, b, i, q);
    int32_t s = 0;
    for (int j = 0; j < 16; ++j) {
      s += ((q[j] & 0x0f) - 8) * static_cast<int32_t>(x[b].qs[j]);
      s += ((q[j] >> 4) - 8) * static_cast<int32_t>(x[b].qs[j + 16]);
    }
    acc += static_cast<float>(s) * (f16_to_f32(dw) * x[b].d);
  }
  return acc;
}

// Q4_KR: the GGUF super-block gathered back from the group, then the Q4_K sum; the activations'
// 32-element sums stand in for the pairs of 16-element ones.
float dot_q4_kr(const uint8_t* group, int i, const BlockQ8_KS* x, int64_t nb) {
  float acc = 0;
  for (int64_t b = 0; b < nb; ++b) {
    BlockQ4_K w;
    q4kr_row_block(group, b, i, &w);
    int32_t asum[8];
    for (int j = 0; j < 8; ++j) asum[j] = x[b].ssum[j];
    acc += q4_k_block_dot(w, x[b].qs, asum, x[b].d);
  }
  return acc;
}

template <class XB, float (*Dot)(const uint8_t*, int, const XB*, int64_t)>
void run_interleaved(const MatArgs& a) {
  for (int64_t r = a.r0; r < a.r1; ++r) {
    const uint8_t* group = a.W + static_cast<size_t>(r / kInterleaveRows) * kInterleaveRows * a.w_stride;
    for (int64_t t = 0; t < a.T; ++t) {
      const auto* x = reinterpret_cast<const XB*>(a.X + t * a.x_stride);
      a.Y[t * a.ldy + r] = Dot(group, static_cast<int>(r % kInterleaveRows), x, a.nb);
    }
  }
}

template <class WB, class XB, float (*Dot)(const WB*, const XB*, int64_t)>
void run(const MatArgs& a) {
  for (int64_t r = a.r0; r < a.r1; ++r) {
    const auto* w = reinterpret_cast<const WB*>(a.W + r * a.w_stride);
    for (int64_t t = 0; t < a.T; ++t) {
      const auto* x = reinterpret_cast<const XB*>(a.X + t * a.x_stride);
      a.Y[t * a.ldy + r] = Dot(w, x, a.nb);
    }
  }
}

}  // namespace

void scalar_q8_0r(const MatArgs& a) { run_interleaved<BlockQ8_0Z, dot_q8_0r>(a); }
void scalar_q4_0r(const MatArgs& a) { run_interleaved<BlockQ8_0Z, dot_q4_0r>(a); }
void scalar_q4_kr(const MatArgs& a) { run_interleaved<BlockQ8_KS, dot_q4_kr>(a); }

const KernelTable& scalar_kernels() {
  static const KernelTable t = {
      {run<BlockQ8_0, BlockQ8_0, dot_q8_0>, run<BlockQ4_0, BlockQ8_0, dot_q4_0>,
       run<BlockQ4_K, BlockQ8_K, dot_q4_k>, scalar_q8_0r, scalar_q4_0r, scalar_q4_kr},
      {run<BlockQ8_0, BlockQ8_0, dot_q8_0>, run<BlockQ4_0, BlockQ8_0, dot_q4_0>,
       run<BlockQ4_K, BlockQ8_K, dot_q4_k>, scalar_q8_0r, scalar_q4_0r, scalar_q4_kr},
  };
  return t;
}

}  // namespace jetmoe::qdot_detail
