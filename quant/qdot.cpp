#include "quant/qdot.h"

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "quant/qdot_kernels.h"
#include "quant/qtypes.h"
#include "quant/quantize.h"
#include "quant/repack.h"
#include "quant/stream_prefetch.h"

namespace jetmoe {
namespace qdot_detail {

int kernel_index(DType t) {
  switch (t) {
    case DType::Q8_0: return 0;
    case DType::Q4_0: return 1;
    case DType::Q4_K: return 2;
    case DType::Q8_0R: return 3;
    case DType::Q4_0R: return 4;
    case DType::Q4_KR: return 5;
    default: return -1;
  }
}

const KernelTable& kernel_table(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Avx512: return avx512_kernels();
    case CpuIsa::Avx2: return avx2_kernels();
    case CpuIsa::Scalar: break;
  }
  return scalar_kernels();
}

MatArgs make_args(CpuIsa isa, DType wtype, const void* W, int64_t row_begin, int64_t row_end, int64_t n,
                  const void* X, int64_t T, float* Y, int64_t ldy, const char* what) {
  check_quant_row(wtype, n, what);
  if (row_begin < 0 || row_end < row_begin)
    throw std::invalid_argument(std::string(what) + ": bad row range [" +
                                std::to_string(row_begin) + ", " + std::to_string(row_end) + ")");
  if (T < 0) throw std::invalid_argument(std::string(what) + ": negative token count");
  if (dtype_is_repacked(wtype) && (row_begin % kInterleaveRows != 0 || row_end % kInterleaveRows != 0))
    throw std::invalid_argument(std::string(what) + ": " + dtype_name(wtype) + " rows come in groups of " +
                                std::to_string(kInterleaveRows) + "; the range [" + std::to_string(row_begin) + ", " +
                                std::to_string(row_end) + ") splits one");
  MatArgs a;
  a.W = static_cast<const uint8_t*>(W);
  a.w_stride = dtype_row_bytes(wtype, static_cast<size_t>(n));
  a.X = static_cast<const uint8_t*>(X);
  a.x_stride = activation_row_bytes(wtype, n);
  a.nb = n / static_cast<int64_t>(dtype_block_elems(wtype));
  a.Y = Y;
  a.ldy = ldy;
  a.T = T;
  a.r0 = row_begin;
  a.r1 = row_end;
  if (T == 1) {  // the one-token kernels' stream plan (quant/stream_prefetch.h)
    const DecodeStream s = decode_stream(wtype, isa);
    a.prefetch = s.l2;
    a.prefetch_l1 = s.l1;
    a.touch = s.touch;
    a.rolled = s.rolled;
    a.two_streams = s.two_streams;
  }
  return a;
}

}  // namespace qdot_detail

namespace {

// Round to nearest, ties to even (what std::nearbyint does in the default rounding mode), by the
// 1.5 * 2^23 trick: exact for |v| < 2^22, inlined on the baseline x86-64 ISA where nearbyint is a
// library call, and vectorisable. Clamped to the symmetric int8 range.
inline int8_t round_clamp_127(float v) {
  constexpr float kMagic = 12582912.0f;
  v = v < -127.0f ? -127.0f : (v > 127.0f ? 127.0f : v);
  return static_cast<int8_t>(static_cast<int>((v + kMagic) - kMagic));
}

void quantize_q8_0_blocks(const float* x, BlockQ8_0* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float* xb = x + i * kQK8_0;
    float amax = 0;
    for (int k = 0; k < kQK8_0; ++k) {  // (not std::fmax: a library call; NaN is skipped alike)
      const float a = std::fabs(xb[k]);
      amax = a > amax ? a : amax;
    }
    b[i].d = f32_to_f16(amax / 127.0f);
    const float d = f16_to_f32(b[i].d);
    const float id = d > 0 ? 1.0f / d : 0.0f;
    for (int k = 0; k < kQK8_0; ++k) b[i].qs[k] = round_clamp_127(xb[k] * id);
  }
}

// Q8_0 blocks for the interleaved Q8_0R / Q4_0R kernels: the same values and scale as Q8_0, the
// scale as a float and the weight format's zero-point term (quant/qtypes.h, BlockQ8_0Z).
void quantize_q8_0z_blocks(const float* x, BlockQ8_0Z* b, int64_t nb, int32_t zero_point) {
  BlockQ8_0 q;
  for (int64_t i = 0; i < nb; ++i) {
    quantize_q8_0_blocks(x + i * kQK8_0, &q, 1);
    std::memcpy(b[i].qs, q.qs, kQK8_0);
    b[i].d = f16_to_f32(q.d);
    int32_t sum = 0;
    for (int k = 0; k < kQK8_0; ++k) sum += q.qs[k];
    b[i].zsum = -zero_point * sum;
  }
}

void quantize_q8_k_blocks(const float* x, BlockQ8_K* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float* xb = x + i * kQK_K;
    float amax = 0;
    for (int k = 0; k < kQK_K; ++k) {
      const float a = std::fabs(xb[k]);
      amax = a > amax ? a : amax;
    }
    const float d = amax / 127.0f;
    const float id = d > 0 ? 1.0f / d : 0.0f;
    b[i].d = d;
    for (int k = 0; k < kQK_K; ++k) b[i].qs[k] = round_clamp_127(xb[k] * id);
    for (int g = 0; g < kQK_K / 16; ++g) {
      int s = 0;
      for (int k = 0; k < 16; ++k) s += b[i].qs[16 * g + k];
      b[i].bsums[g] = static_cast<int16_t>(s);
    }
  }
}

// Q8_K blocks with the sums of each 32-element sub-block, for the interleaved Q4_KR kernels.
void quantize_q8_ks_blocks(const float* x, BlockQ8_KS* b, int64_t nb) {
  BlockQ8_K q;
  for (int64_t i = 0; i < nb; ++i) {
    quantize_q8_k_blocks(x + i * kQK_K, &q, 1);
    b[i].d = q.d;
    std::memcpy(b[i].qs, q.qs, kQK_K);
    for (int j = 0; j < 8; ++j) b[i].ssum[j] = static_cast<int16_t>(q.bsums[2 * j] + q.bsums[2 * j + 1]);
  }
}



}  // namespace

size_t activation_row_bytes(DType wtype, int64_t n) {
  check_quant_row(wtype, n, "activation_row_bytes");
  if (wtype == DType::Q4_K) return static_cast<size_t>(n / kQK_K) * sizeof(BlockQ8_K);
  if (wtype == DType::Q4_KR) return static_cast<size_t>(n / kQK_K) * sizeof(BlockQ8_KS);
  if (dtype_is_repacked(wtype)) return static_cast<size_t>(n / kQK8_0) * sizeof(BlockQ8_0Z);
  return static_cast<size_t>(n / kQK8_0) * sizeof(BlockQ8_0);
}

namespace {

void quantize_row_with(CpuIsa isa, DType wtype, const float* x, void* dst, int64_t n) {
  check_quant_row(wtype, n, "quantize_activation_row");
  // The interleaved types' activations have AVX-512 and AVX2 code, the GGUF-layout ones AVX2 code,
  // which the AVX-512 CPUs run too (decode quantizes before every matmul group).
  const qdot_detail::ActivationQuantFns* simd = isa == CpuIsa::Avx512 ? qdot_detail::avx512_activation_quant()
                                                 : isa == CpuIsa::Avx2  ? qdot_detail::avx2_interleaved_activation_quant()
                                                                        : nullptr;
  const qdot_detail::GgufActivationQuantFns* gguf =
      isa == CpuIsa::Avx512 || isa == CpuIsa::Avx2 ? qdot_detail::avx2_activation_quant() : nullptr;
  if (wtype == DType::Q4_K)
    (gguf ? gguf->q8_k : quantize_q8_k_blocks)(x, static_cast<BlockQ8_K*>(dst), n / kQK_K);
  else if (wtype == DType::Q4_KR)
    (simd ? simd->q8_ks : quantize_q8_ks_blocks)(x, static_cast<BlockQ8_KS*>(dst), n / kQK_K);
  else if (dtype_is_repacked(wtype))
    (simd ? simd->q8_0z : quantize_q8_0z_blocks)(x, static_cast<BlockQ8_0Z*>(dst), n / kQK8_0, wtype == DType::Q8_0R ? 128 : 8);
  else
    (gguf ? gguf->q8_0 : quantize_q8_0_blocks)(x, static_cast<BlockQ8_0*>(dst), n / kQK8_0);
}

}  // namespace

void quantize_activation_row(DType wtype, const float* x, void* dst, int64_t n) {
  quantize_row_with(active_isa(), wtype, x, dst, n);
}

void quantize_activation_rows(DType wtype, const float* x, int64_t ldx, void* dst, int64_t T,
                              int64_t n) {
  const size_t rb = activation_row_bytes(wtype, n);
  for (int64_t t = 0; t < T; ++t)
    quantize_activation_row(wtype, x + t * ldx, static_cast<uint8_t*>(dst) + t * rb, n);
}

namespace {

void check_isa(CpuIsa isa) {
  static const std::vector<CpuIsa> supported = supported_isas();
  for (CpuIsa s : supported)
    if (s == isa) return;
  throw std::invalid_argument(std::string("qdot: ISA ") + isa_name(isa) +
                              " is not supported on this CPU");
}

void run_matvec(CpuIsa isa, DType wtype, const void* W, int64_t row_begin, int64_t row_end,
                int64_t n, const void* xq, float* y) {
  const auto a = qdot_detail::make_args(isa, wtype, W, row_begin, row_end, n, xq, 1, y, 0, "qmatvec");
  if (row_end == row_begin) return;
  qdot_detail::kernel_table(isa).matvec[qdot_detail::kernel_index(wtype)](a);
}

void run_matmul(CpuIsa isa, DType wtype, const void* W, int64_t row_begin, int64_t row_end,
                int64_t n, const void* Xq, int64_t T, float* Y, int64_t ldy) {
  const auto a = qdot_detail::make_args(isa, wtype, W, row_begin, row_end, n, Xq, T, Y, ldy, "qmatmul");
  if (row_end == row_begin || T == 0) return;
  if (qdot_detail::packed_matmul_applies(isa, wtype, row_end - row_begin, T))
    return qdot_detail::packed_matmul(isa, wtype, a);
  qdot_detail::kernel_table(isa).matmul[qdot_detail::kernel_index(wtype)](a);
}

}  // namespace

void qmatvec_isa(CpuIsa isa, DType wtype, const void* W, int64_t row_begin, int64_t row_end,
                 int64_t n, const void* xq, float* y) {
  check_isa(isa);
  run_matvec(isa, wtype, W, row_begin, row_end, n, xq, y);
}

void quantize_activation_row_isa(CpuIsa isa, DType wtype, const float* x, void* dst, int64_t n) {
  check_isa(isa);
  quantize_row_with(isa, wtype, x, dst, n);
}

void qmatmul_isa(CpuIsa isa, DType wtype, const void* W, int64_t row_begin, int64_t row_end,
                 int64_t n, const void* Xq, int64_t T, float* Y, int64_t ldy) {
  check_isa(isa);
  run_matmul(isa, wtype, W, row_begin, row_end, n, Xq, T, Y, ldy);
}

void qmatvec(DType wtype, const void* W, int64_t row_begin, int64_t row_end, int64_t n,
             const void* xq, float* y) {
  run_matvec(active_isa(), wtype, W, row_begin, row_end, n, xq, y);
}

void qmatmul(DType wtype, const void* W, int64_t row_begin, int64_t row_end, int64_t n,
             const void* Xq, int64_t T, float* Y, int64_t ldy) {
  run_matmul(active_isa(), wtype, W, row_begin, row_end, n, Xq, T, Y, ldy);
}

}  // namespace jetmoe
