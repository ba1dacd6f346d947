#include "quant/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "quant/qtypes.h"
#include "quant/repack.h"

namespace jetmoe {
namespace {

inline int round_int(float x) { return static_cast<int>(std::nearbyint(x)); }
inline int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

// ---- symmetric (type-0) blocks: value = d * q, q in [qmin, qmax] ---------------------------

// Rounds every x to the nearest level of the fp16 scale `d` (given as float, stored as fp16),
// writes q and returns the squared error. `dh` receives the fp16 bits actually stored.
double sym_eval(const float* x, int n, float d, int qmin, int qmax, int* q, uint16_t* dh) {
  *dh = f32_to_f16(d);
  const float ds = f16_to_f32(*dh);
  double err = 0;
  if (ds == 0.0f || !std::isfinite(ds)) {
    *dh = 0;
    for (int i = 0; i < n; ++i) {
      q[i] = 0;
      err += static_cast<double>(x[i]) * x[i];
    }
    return err;
  }
  const float id = 1.0f / ds;
  for (int i = 0; i < n; ++i) {
    q[i] = clampi(round_int(x[i] * id), qmin, qmax);
    const float e = x[i] - ds * static_cast<float>(q[i]);
    err += static_cast<double>(e) * e;
  }
  return err;
}

// Searches candidate scales d = ref / t for every divisor t in `divs` (ref = the signed value of
// largest magnitude, or amax), refines each with the least-squares scale for its rounding, and
// keeps the fp16 scale with the smallest squared error. The first divisor is the plain max-abs
// scale, so the result is never worse than it. With `search` false only that one is used.
void sym_quantize(const float* x, int n, float ref, const float* divs, int ndivs, int qmin,
                  int qmax, bool search, int* q_out, uint16_t* d_out) {
  double best = sym_eval(x, n, ref / divs[0], qmin, qmax, q_out, d_out);
  if (!search || ref == 0.0f) return;
  int q[64];
  uint16_t dh;
  auto consider = [&](float d) {
    const double err = sym_eval(x, n, d, qmin, qmax, q, &dh);
    if (err < best) {
      best = err;
      *d_out = dh;
      std::copy(q, q + n, q_out);
    }
  };
  for (int k = 0; k < ndivs; ++k) {
    if (k == 0) {
      std::copy(q_out, q_out + n, q);
    } else {
      consider(ref / divs[k]);
    }
    // least-squares scale for the rounding in q: d = sum(x q) / sum(q q)
    double sxq = 0, sqq = 0;
    for (int i = 0; i < n; ++i) {
      sxq += static_cast<double>(x[i]) * q[i];
      sqq += static_cast<double>(q[i]) * q[i];
    }
    if (sqq > 0) consider(static_cast<float>(sxq / sqq));
  }
}

void quantize_block_q8_0(const float* x, BlockQ8_0& b, bool search) {
  float amax = 0;
  for (int i = 0; i < kQK8_0; ++i) amax = std::max(amax, std::fabs(x[i]));
  // Divisors around 127: below 127 coarsens the step, above it clips the largest value.
  static const float divs[] = {127.0f, 126.0f, 126.5f, 127.25f, 127.5f, 128.0f, 129.0f};
  int q[kQK8_0];
  sym_quantize(x, kQK8_0, amax, divs, search ? 7 : 1, -127, 127, search, q, &b.d);
  for (int i = 0; i < kQK8_0; ++i) b.qs[i] = static_cast<int8_t>(q[i]);
}

void quantize_block_q4_0(const float* x, BlockQ4_0& b, bool search) {
  float amax = 0, vmax = 0;
  for (int i = 0; i < kQK4_0; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      vmax = x[i];
    }
  }
  // ggml-style baseline: the max-abs element maps to -8 (d = vmax / -8). Candidates: a grid of
  // divisors around -8 (the max-abs element at, or a bit inside / outside, the -8 end) and around
  // +7 (the max-abs element on the short +7 end, i.e. opposite sign of d).
  static const float divs[] = {-8.0f, -10.0f, -9.5f, -9.0f, -8.5f, -7.5f, -7.0f, -6.5f,
                               7.0f,  7.5f,   8.0f,  8.5f,  9.0f};
  constexpr int ndivs = static_cast<int>(sizeof(divs) / sizeof(divs[0]));
  int q[kQK4_0];
  sym_quantize(x, kQK4_0, vmax, divs, search ? ndivs : 1, -8, 7, search, q, &b.d);
  for (int j = 0; j < 16; ++j)
    b.qs[j] = static_cast<uint8_t>((q[j] + 8) | ((q[j + 16] + 8) << 4));
}

// ---- Q4_K (type-1): value = s*q - mm per sub-block of 32, q in [0,15] -----------------------

// Error of representing x with levels s*q - mm (s > 0), q rounded to nearest and clamped.
double asym_eval(const float* x, int n, float s, float mm, uint8_t* q) {
  double err = 0;
  if (s <= 0.0f) {
    for (int i = 0; i < n; ++i) {
      if (q) q[i] = 0;
      const float e = x[i] + mm;
      err += static_cast<double>(e) * e;
    }
    return err;
  }
  const float is = 1.0f / s;
  for (int i = 0; i < n; ++i) {
    const int l = clampi(round_int((x[i] + mm) * is), 0, 15);
    if (q) q[i] = static_cast<uint8_t>(l);
    const float e = s * static_cast<float>(l) - mm - x[i];
    err += static_cast<double>(e) * e;
  }
  return err;
}

// Fits scale s >= 0 and min mm >= 0 of one sub-block. Baseline: s = (max - min)/15, mm = -min
// with min clamped to <= 0 (as GGUF mins are subtracted and stored unsigned). Search: a grid of
// inverse scales (15 + delta)/(max - min); each rounding is refitted by 2x2 least squares
// (constrained to mm >= 0), and the (s, mm) pair with the smallest true error wins.
void fit_subblock(const float* x, int n, bool search, float* s_out, float* mm_out) {
  float xmin = x[0], xmax = x[0];
  for (int i = 1; i < n; ++i) {
    xmin = std::min(xmin, x[i]);
    xmax = std::max(xmax, x[i]);
  }
  xmin = std::min(xmin, 0.0f);
  if (!(xmax > xmin)) {
    *s_out = 0;
    *mm_out = -xmin;
    return;
  }
  float best_s = (xmax - xmin) / 15.0f, best_mm = -xmin;
  if (!search) {
    *s_out = best_s;
    *mm_out = best_mm;
    return;
  }
  double best = asym_eval(x, n, best_s, best_mm, nullptr);
  const float range = xmax - xmin;
  for (int k = 0; k <= 24; ++k) {
    const float iscale = (15.0f - 1.0f + 0.1f * static_cast<float>(k)) / range;
    double sq = 0, sqq = 0, sx = 0, sqx = 0;
    for (int i = 0; i < n; ++i) {
      const double l = clampi(round_int(iscale * (x[i] - xmin)), 0, 15);
      sq += l;
      sqq += l * l;
      sx += x[i];
      sqx += l * x[i];
    }
    // minimise sum (s*l + b - x)^2 over s, b with b = -mm <= 0
    const double det = n * sqq - sq * sq;
    double s, b;
    if (det > 0) {
      s = (n * sqx - sq * sx) / det;
      b = (sqq * sx - sq * sqx) / det;
    } else {
      continue;
    }
    if (b > 0) {
      b = 0;
      s = sqq > 0 ? sqx / sqq : 0;
    }
    if (s <= 0) continue;
    const double err = asym_eval(x, n, static_cast<float>(s), static_cast<float>(-b), nullptr);
    if (err < best) {
      best = err;
      best_s = static_cast<float>(s);
      best_mm = static_cast<float>(-b);
    }
  }
  *s_out = best_s;
  *mm_out = best_mm;
}

void quantize_block_q4_k(const float* x, BlockQ4_K& b, bool search) {
  float s[8], mm[8];
  float smax = 0, mmax = 0;
  for (int j = 0; j < 8; ++j) {
    fit_subblock(x + 32 * j, 32, search, &s[j], &mm[j]);
    smax = std::max(smax, s[j]);
    mmax = std::max(mmax, mm[j]);
  }
  b.d = f32_to_f16(smax / 63.0f);
  b.dmin = f32_to_f16(mmax / 63.0f);
  const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
  uint8_t sc[8], m[8];
  for (int j = 0; j < 8; ++j) {
    sc[j] = static_cast<uint8_t>(d > 0 ? clampi(round_int(s[j] / d), 0, 63) : 0);
    m[j] = static_cast<uint8_t>(dmin > 0 ? clampi(round_int(mm[j] / dmin), 0, 63) : 0);
    if (search) {
      // The 6-bit rounding of (s, mm) is itself a choice: try the neighbouring codes.
      const float* xs = x + 32 * j;
      double best = asym_eval(xs, 32, d * sc[j], dmin * m[j], nullptr);
      const int sc0 = sc[j], m0 = m[j];
      for (int ds = -1; ds <= 1; ++ds) {
        for (int dm = -1; dm <= 1; ++dm) {
          const int a = sc0 + ds, c = m0 + dm;
          if ((ds == 0 && dm == 0) || a < 0 || a > 63 || c < 0 || c > 63) continue;
          const double err = asym_eval(xs, 32, d * a, dmin * c, nullptr);
          if (err < best) {
            best = err;
            sc[j] = static_cast<uint8_t>(a);
            m[j] = static_cast<uint8_t>(c);
          }
        }
      }
    }
  }
  q4k_pack_scales(sc, m, b.scales);
  uint8_t q[kQK_K];
  for (int j = 0; j < 8; ++j) asym_eval(x + 32 * j, 32, d * sc[j], dmin * m[j], q + 32 * j);
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l)
      b.qs[32 * c + l] = static_cast<uint8_t>(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
}

void quantize_row_impl(DType t, const float* x, void* dst, int64_t n, bool search) {
  const int64_t nb = n / static_cast<int64_t>(dtype_block_elems(t));
  switch (t) {
    case DType::Q8_0: {
      auto* b = static_cast<BlockQ8_0*>(dst);
      for (int64_t i = 0; i < nb; ++i) quantize_block_q8_0(x + i * kQK8_0, b[i], search);
      break;
    }
    case DType::Q4_0: {
      auto* b = static_cast<BlockQ4_0*>(dst);
      for (int64_t i = 0; i < nb; ++i) quantize_block_q4_0(x + i * kQK4_0, b[i], search);
      break;
    }
    case DType::Q4_K: {
      auto* b = static_cast<BlockQ4_K*>(dst);
      for (int64_t i = 0; i < nb; ++i) quantize_block_q4_k(x + i * kQK_K, b[i], search);
      break;
    }
    default: break;
  }
}

}  // namespace

void check_quant_row(DType t, int64_t n, const char* what) {
  if (!dtype_is_quantized(t))
    throw std::invalid_argument(std::string(what) + ": " + dtype_name(t) +
                                " is not a block-quantized type (expected Q8_0, Q4_0 or Q4_K)");
  const int64_t be = static_cast<int64_t>(dtype_block_elems(t));
  if (n < 0 || n % be != 0)
    throw std::invalid_argument(std::string(what) + ": row length " + std::to_string(n) +
                                " is not a multiple of the " + dtype_name(t) + " block size " +
                                std::to_string(be));
}

namespace {

// A repacked type interleaves 16 rows, so a single row of it cannot be written or read alone.
void check_not_repacked(DType t, const char* what) {
  if (dtype_is_repacked(t))
    throw std::invalid_argument(std::string(what) + ": " + dtype_name(t) +
                                " interleaves 16 rows; use quantize_tensor_rows / dequantize_matrix_row");
}

}  // namespace

void quantize_row(DType t, const float* x, void* dst, int64_t n) {
  check_quant_row(t, n, "quantize_row");
  check_not_repacked(t, "quantize_row");
  quantize_row_impl(t, x, dst, n, true);
}

void quantize_row_maxabs(DType t, const float* x, void* dst, int64_t n) {
  check_quant_row(t, n, "quantize_row_maxabs");
  check_not_repacked(t, "quantize_row_maxabs");
  quantize_row_impl(t, x, dst, n, false);
}

namespace {

// One Q8_0 / Q4_0 block's quant bytes (GGUF order) and scale, decoded into 32 floats.
void decode_block(DType file, const uint8_t* qs, uint16_t dh, float* y) {
  const float d = f16_to_f32(dh);
  if (file == DType::Q8_0) {
    for (int k = 0; k < kQK8_0; ++k) y[k] = d * static_cast<float>(static_cast<int8_t>(qs[k]));
    return;
  }
  for (int j = 0; j < 16; ++j) {
    y[j] = d * static_cast<float>((qs[j] & 0x0f) - 8);
    y[j + 16] = d * static_cast<float>((qs[j] >> 4) - 8);
  }
}

void decode_block_q4_k(const BlockQ4_K& b, float* y) {
  const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
  uint8_t sm[16];
  q4k_unpack_scales(b.scales, sm);
  for (int c = 0; c < 4; ++c) {
    const float d1 = d * sm[2 * c], m1 = dmin * sm[8 + 2 * c];
    const float d2 = d * sm[2 * c + 1], m2 = dmin * sm[8 + 2 * c + 1];
    const uint8_t* q = b.qs + 32 * c;
    for (int l = 0; l < 32; ++l) {
      y[64 * c + l] = d1 * static_cast<float>(q[l] & 0x0f) - m1;
      y[64 * c + 32 + l] = d2 * static_cast<float>(q[l] >> 4) - m2;
    }
  }
}

}  // namespace

void dequantize_row(DType t, const void* src, float* y, int64_t n) {
  check_quant_row(t, n, "dequantize_row");
  check_not_repacked(t, "dequantize_row");
  const int64_t nb = n / static_cast<int64_t>(dtype_block_elems(t));
  switch (t) {
    case DType::Q8_0: {
      const auto* b = static_cast<const BlockQ8_0*>(src);
      for (int64_t i = 0; i < nb; ++i) decode_block(t, reinterpret_cast<const uint8_t*>(b[i].qs), b[i].d, y + i * kQK8_0);
      break;
    }
    case DType::Q4_0: {
      const auto* b = static_cast<const BlockQ4_0*>(src);
      for (int64_t i = 0; i < nb; ++i) decode_block(t, b[i].qs, b[i].d, y + i * kQK4_0);
      break;
    }
    case DType::Q4_K: {
      const auto* b = static_cast<const BlockQ4_K*>(src);
      for (int64_t i = 0; i < nb; ++i) decode_block_q4_k(b[i], y + i * kQK_K);
      break;
    }
    default: break;
  }
}

void dequantize_matrix_row(DType t, const void* matrix, int64_t r, float* y, int64_t n) {
  check_quant_row(t, n, "dequantize_matrix_row");
  if (r < 0) throw std::invalid_argument("dequantize_matrix_row: negative row " + std::to_string(r));
  const size_t rb = dtype_row_bytes(t, static_cast<size_t>(n));
  if (!dtype_is_repacked(t)) return dequantize_row(t, static_cast<const uint8_t*>(matrix) + static_cast<size_t>(r) * rb, y, n);
  // Read in place: decoding one embedding row per token allocates nothing.
  const DType file = file_type(t);
  const auto* group = static_cast<const uint8_t*>(matrix) + static_cast<size_t>(r / kInterleaveRows) * kInterleaveRows * rb;
  if (file == DType::Q4_K) {
    BlockQ4_K b;
    for (int64_t i = 0; i < n / kQK_K; ++i) {
      q4kr_row_block(group, i, static_cast<int>(r % kInterleaveRows), &b);
      decode_block_q4_k(b, y + i * kQK_K);
    }
    return;
  }
  const size_t qb = file == DType::Q8_0 ? kQK8_0 : kQK4_0 / 2;
  const int64_t nb = n / 32;
  uint8_t qs[kQK8_0];
  for (int64_t b = 0; b < nb; ++b) {
    const uint16_t d = interleaved_row_block(group, qb, nb, b, static_cast<int>(r % kInterleaveRows), qs);
    decode_block(file, qs, d, y + b * 32);
  }
}

void quantize_tensor_rows(DType t, const float* x, void* dst, int64_t rows, int64_t n) {
  check_quant_row(t, n, "quantize_tensor_rows");
  if (rows < 0) throw std::invalid_argument("quantize_tensor_rows: negative row count");
  const DType file = file_type(t);  // a repacked type: its file type's rows, interleaved afterwards
  const size_t rb = dtype_row_bytes(t, static_cast<size_t>(n));
  auto* out = static_cast<uint8_t*>(dst);
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t r = 0; r < rows; ++r) quantize_row_impl(file, x + r * n, out + r * rb, n, true);
  if (file != t) repack_rows(file, dst, rows, n);
}

}  // namespace jetmoe
