// kv_widen, kv_scores and kv_accumulate written once over a vector-traits type
// (ops/cpu/simd_avx2.h, simd_avx512.h); included only by kv_rows_avx2.cpp and kv_rows_avx512.cpp,
// each compiled with its own flags.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ops/cpu/kv_rows.h"
#include "quant/qtypes.h"
#include "quant/stream_prefetch.h"

namespace jetmoe {
namespace {

// Decode attention streams each KV head's rows once (tens of KB at short contexts, MB at long
// ones); on the Xeon the L2 streamer stops at every 4 KiB page, so scores and accumulate ask for
// each row ahead as kv_row_prefetch() says (quant/stream_prefetch.h: into L2 decode_prefetch_bytes()
// ahead, or on an Ice Lake Xeon into L1 alone 4 KiB ahead; neither on AMD, where
// CpuBackend::attention_decode touches a head's rows sparsely before these run: kv_touch_bytes).
template <class V>
void kv_widen_simd(DType t, const uint8_t* rows, int64_t n_rows, int64_t d, float* out) {
  constexpr int64_t W = V::width;
  if (d % W != 0) return kv_widen_scalar(t, rows, n_rows, d, out);  // odd head sizes: rare, small
  const int64_t n = n_rows * d;  // float-typed rows are contiguous elements
  switch (t) {
    case DType::F32: std::memcpy(out, rows, static_cast<size_t>(n) * sizeof(float)); return;
    case DType::F16: {
      const auto* h = reinterpret_cast<const uint16_t*>(rows);
      for (int64_t i = 0; i < n; i += W) V::store(out + i, V::load_f16(h + i));
      return;
    }
    case DType::BF16: {
      const auto* h = reinterpret_cast<const uint16_t*>(rows);
      for (int64_t i = 0; i < n; i += W) V::store(out + i, V::load_bf16(h + i));
      return;
    }
    case DType::Q8_0: {
      const auto* b = reinterpret_cast<const BlockQ8_0*>(rows);  // rows are whole blocks, back to back
      for (int64_t k = 0; k < n / kQK8_0; ++k, out += kQK8_0) {
        const auto s = V::set1(f16_to_f32(b[k].d));
        for (int64_t i = 0; i < kQK8_0; i += W) V::store(out + i, V::mul(s, V::load_i8(b[k].qs + i)));
      }
      return;
    }
    default: return kv_widen_scalar(t, rows, n_rows, d, out);  // throws: not a cache type
  }
}

// One row's lines asked for ahead, as the plan says (L2 or L1 alone; nothing when both are 0).
inline void prefetch_row(const uint8_t* row, size_t rb, KvRowPrefetch pf) {
  if (pf.l1)
    prefetch_lines_l1(row + pf.l1, rb);
  else if (pf.l2)
    prefetch_lines_l2(row + pf.l2, rb);
}

// Vector k (elements k*W .. k*W+W-1) of one cache row of type T, as floats. Q8_0 rows are whole
// 32-value blocks back to back; W (8 or 16) divides 32, so a vector never straddles two blocks.
template <class V, DType T>
struct RowReader {
  const uint8_t* row;
  float scale[16];  // Q8_0 block scales (heads up to 512 values)

  explicit RowReader(const uint8_t* r, int64_t d) : row(r) {
    if constexpr (T == DType::Q8_0) {
      const auto* b = reinterpret_cast<const BlockQ8_0*>(r);
      for (int64_t i = 0; i < d / kQK8_0; ++i) scale[i] = V::h2f(b[i].d);
    }
  }
  typename V::vec load(int64_t k) const {
    constexpr int64_t W = V::width;
    if constexpr (T == DType::F32) return V::load(reinterpret_cast<const float*>(row) + k * W);
    else if constexpr (T == DType::F16) return V::load_f16(reinterpret_cast<const uint16_t*>(row) + k * W);
    else if constexpr (T == DType::BF16) return V::load_bf16(reinterpret_cast<const uint16_t*>(row) + k * W);
    else {
      const int64_t e = k * W, b = e / kQK8_0;
      const auto* blk = reinterpret_cast<const BlockQ8_0*>(row) + b;
      return V::mul(V::set1(scale[b]), V::load_i8(blk->qs + (e - b * kQK8_0)));
    }
  }
};

// NQ query heads at once: each row is converted once and dotted with every head.
template <class V, DType T, int NQ>
void scores_rows(const uint8_t* rows, int64_t n, int64_t d, const float* q, int64_t ldq, float scale, float* s,
                 int64_t lds, KvRowPrefetch pf) {
  constexpr int64_t W = V::width;
  const size_t rb = dtype_row_bytes(T, static_cast<size_t>(d));
  const int64_t nv = d / W;
  for (int64_t r = 0; r < n; ++r) {
    prefetch_row(rows + static_cast<size_t>(r) * rb, rb, pf);
    const RowReader<V, T> R(rows + static_cast<size_t>(r) * rb, d);
    typename V::vec acc[NQ][2];
    for (int j = 0; j < NQ; ++j) acc[j][0] = acc[j][1] = V::zero();
    int64_t k = 0;
    for (; k + 2 <= nv; k += 2) {  // two independent chains per head
      const auto w0 = R.load(k), w1 = R.load(k + 1);
      for (int j = 0; j < NQ; ++j) {
        acc[j][0] = V::fma(w0, V::load(q + j * ldq + k * W), acc[j][0]);
        acc[j][1] = V::fma(w1, V::load(q + j * ldq + (k + 1) * W), acc[j][1]);
      }
    }
    if (k < nv) {
      const auto w0 = R.load(k);
      for (int j = 0; j < NQ; ++j) acc[j][0] = V::fma(w0, V::load(q + j * ldq + k * W), acc[j][0]);
    }
    for (int j = 0; j < NQ; ++j) s[j * lds + r] = scale * V::hsum(V::add(acc[j][0], acc[j][1]));
  }
}

// Columns k0*W .. (k0+NV)*W of the weighted row sum for NQ heads, accumulators in registers for
// the whole pass over the rows (NQ x NV <= 16 vectors: 2 x 8 zmm, 2 x 4 ymm).
template <class V, DType T, int NQ, int NV>
void accumulate_piece(const uint8_t* rows, int64_t n, int64_t d, int64_t k0, const float* p, int64_t ldp,
                      const float* alpha, float* out, int64_t ldo, KvRowPrefetch pf) {
  constexpr int64_t W = V::width;
  const size_t rb = dtype_row_bytes(T, static_cast<size_t>(d));
  typename V::vec acc[NQ][NV];
  for (int j = 0; j < NQ; ++j)
    for (int v = 0; v < NV; ++v) acc[j][v] = V::zero();
  for (int64_t r = 0; r < n; ++r) {
    prefetch_row(rows + static_cast<size_t>(r) * rb, rb, pf);
    const RowReader<V, T> R(rows + static_cast<size_t>(r) * rb, d);
    typename V::vec c[NQ];
    for (int j = 0; j < NQ; ++j) c[j] = V::set1(p[j * ldp + r]);
    for (int v = 0; v < NV; ++v) {
      const auto w = R.load(k0 + v);
      for (int j = 0; j < NQ; ++j) acc[j][v] = V::fma(c[j], w, acc[j][v]);
    }
  }
  for (int j = 0; j < NQ; ++j)
    for (int v = 0; v < NV; ++v) V::store(out + j * ldo + (k0 + v) * W, V::mul(V::set1(alpha[j]), acc[j][v]));
}

template <class V, DType T, int NQ>
void accumulate_rows(const uint8_t* rows, int64_t n, int64_t d, const float* p, int64_t ldp, const float* alpha,
                     float* out, int64_t ldo, KvRowPrefetch pf) {
  constexpr int kMaxNV = V::width >= 16 ? 8 : 4;  // 16 accumulators of the register file's 32 / 16
  const int64_t nv = d / V::width;
  int64_t k = 0;
  // Only the first pass over the rows prefetches; later column pieces find them in cache.
  const auto pf_at = [&](int64_t k_now) { return k_now == 0 ? pf : KvRowPrefetch{}; };
  for (; k + kMaxNV <= nv; k += kMaxNV)
    accumulate_piece<V, T, NQ, kMaxNV>(rows, n, d, k, p, ldp, alpha, out, ldo, pf_at(k));
  if constexpr (kMaxNV > 4) {
    if (k + 4 <= nv) {
      accumulate_piece<V, T, NQ, 4>(rows, n, d, k, p, ldp, alpha, out, ldo, pf_at(k));
      k += 4;
    }
  }
  if (k + 2 <= nv) {
    accumulate_piece<V, T, NQ, 2>(rows, n, d, k, p, ldp, alpha, out, ldo, pf_at(k));
    k += 2;
  }
  if (k < nv) accumulate_piece<V, T, NQ, 1>(rows, n, d, k, p, ldp, alpha, out, ldo, pf_at(k));
}

// Query heads two at a time (JetMoE's top-2 slots share each KV head), then one.
template <class V, DType T>
void scores_typed(const uint8_t* rows, int64_t n, int64_t d, const float* q, int64_t ldq, int64_t nq, float scale,
                  float* s, int64_t lds) {
  KvRowPrefetch pf = kv_row_prefetch();  // the first pair of heads prefetches; the rest re-read from cache
  int64_t j = 0;
  for (; j + 2 <= nq; j += 2, pf = {}) scores_rows<V, T, 2>(rows, n, d, q + j * ldq, ldq, scale, s + j * lds, lds, pf);
  if (j < nq) scores_rows<V, T, 1>(rows, n, d, q + j * ldq, ldq, scale, s + j * lds, lds, pf);
}

template <class V, DType T>
void accumulate_typed(const uint8_t* rows, int64_t n, int64_t d, const float* p, int64_t ldp, int64_t nq,
                      const float* alpha, float* out, int64_t ldo) {
  KvRowPrefetch pf = kv_row_prefetch();
  int64_t j = 0;
  for (; j + 2 <= nq; j += 2, pf = {})
    accumulate_rows<V, T, 2>(rows, n, d, p + j * ldp, ldp, alpha + j, out + j * ldo, ldo, pf);
  if (j < nq) accumulate_rows<V, T, 1>(rows, n, d, p + j * ldp, ldp, alpha + j, out + j * ldo, ldo, pf);
}

// Heads whose size is not a multiple of the vector width (or over 512 values) take the scalar path.
template <class V>
bool simd_rows_fit(DType t, int64_t d) {
  return d % V::width == 0 && (t != DType::Q8_0 || (d % kQK8_0 == 0 && d <= 16 * kQK8_0));
}

template <class V>
void kv_scores_simd(DType t, const uint8_t* rows, int64_t n, int64_t d, const float* q, int64_t ldq, int64_t nq,
                    float scale, float* s, int64_t lds) {
  if (!simd_rows_fit<V>(t, d)) return kv_scores_scalar(t, rows, n, d, q, ldq, nq, scale, s, lds);
  switch (t) {
    case DType::F32: return scores_typed<V, DType::F32>(rows, n, d, q, ldq, nq, scale, s, lds);
    case DType::F16: return scores_typed<V, DType::F16>(rows, n, d, q, ldq, nq, scale, s, lds);
    case DType::BF16: return scores_typed<V, DType::BF16>(rows, n, d, q, ldq, nq, scale, s, lds);
    case DType::Q8_0: return scores_typed<V, DType::Q8_0>(rows, n, d, q, ldq, nq, scale, s, lds);
    default: return kv_scores_scalar(t, rows, n, d, q, ldq, nq, scale, s, lds);  // throws: not a cache type
  }
}

template <class V>
void kv_accumulate_simd(DType t, const uint8_t* rows, int64_t n, int64_t d, const float* p, int64_t ldp, int64_t nq,
                        const float* alpha, float* out, int64_t ldo) {
  if (!simd_rows_fit<V>(t, d)) return kv_accumulate_scalar(t, rows, n, d, p, ldp, nq, alpha, out, ldo);
  switch (t) {
    case DType::F32: return accumulate_typed<V, DType::F32>(rows, n, d, p, ldp, nq, alpha, out, ldo);
    case DType::F16: return accumulate_typed<V, DType::F16>(rows, n, d, p, ldp, nq, alpha, out, ldo);
    case DType::BF16: return accumulate_typed<V, DType::BF16>(rows, n, d, p, ldp, nq, alpha, out, ldo);
    case DType::Q8_0: return accumulate_typed<V, DType::Q8_0>(rows, n, d, p, ldp, nq, alpha, out, ldo);
    default: return kv_accumulate_scalar(t, rows, n, d, p, ldp, nq, alpha, out, ldo);  // throws
  }
}

// One Q8_0 block (32 values) as quantize_row_maxabs writes it: the fp16 of max|x| / 127 as the
// scale, each value times 1 / that fp16 scale rounded and clamped to +-127; a scale that is 0 or
// not finite stores 0 and zero quants. max|x| skips NaN (vmaxps keeps its second operand, the
// running maximum, as std::max(amax, |x|) does).
template <class V>
void store_q8_0_block(const float* x, BlockQ8_0& b) {
  constexpr int64_t W = V::width;
  auto m = V::zero();
  for (int64_t i = 0; i < kQK8_0; i += W) m = V::max(V::abs(V::load(x + i)), m);
  const uint16_t dh = f32_to_f16(V::hmax(m) / 127.0f);
  const float ds = V::h2f(dh);
  if (ds == 0.0f || std::isinf(ds)) {  // (max|x| is never NaN)
    b.d = 0;
    std::memset(b.qs, 0, sizeof b.qs);
    return;
  }
  b.d = dh;
  const auto id = V::set1(1.0f / ds);
  for (int64_t i = 0; i < kQK8_0; i += W) V::store_i8_clamped(b.qs + i, V::mul(V::load(x + i), id));
}

// One cache row from d floats, bit for bit as kv_store_row, a vector at a time where d fits: the
// scalar converters took ~5% of a 512-token prefill with an f16 cache (2 x 16 x 128 values per
// token and layer; kernels bench kv_store: 3.9 ms per layer's prompt scalar, 0.18 ms here, Zen
// 5), and the scalar Q8_0 quantizer 9.5 ms. F32 is a copy.
template <class V>
void kv_store_simd(DType t, const float* x, int64_t d, uint8_t* dst) {
  constexpr int64_t W = V::width;
  if (t == DType::F32 || d % W != 0 || (t == DType::Q8_0 && d % kQK8_0 != 0)) return kv_store_row(t, x, d, dst);
  auto* h = reinterpret_cast<uint16_t*>(dst);
  switch (t) {
    case DType::F16:
      for (int64_t i = 0; i < d; i += W) V::store_f16(h + i, V::load(x + i));
      return;
    case DType::BF16:
      for (int64_t i = 0; i < d; i += W) V::store_bf16(h + i, V::load(x + i));
      return;
    case DType::Q8_0: {
      auto* b = reinterpret_cast<BlockQ8_0*>(dst);
      for (int64_t k = 0; k < d / kQK8_0; ++k) store_q8_0_block<V>(x + k * kQK8_0, b[k]);
      return;
    }
    default: return kv_store_row(t, x, d, dst);  // throws: not a cache type
  }
}

}  // namespace
}  // namespace jetmoe
