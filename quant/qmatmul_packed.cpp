// Prefill on weights in the GGUF block layout (a mapped .gguf file, which is never repacked: that
// would copy it): every whole run of 16 rows is packed into the interleaved layout (the AVX2
// transposes of repack_avx2.cpp; the bytes repack_rows gives) in a buffer of the calling thread
// and multiplied there by the interleaved kernels, whose tiles keep one int32 lane per row (no
// horizontal sums, one scale multiply-add per 8 or 16 rows). Packing 16 rows
// is a copy of their bytes, paid once for all the call's tokens; the activations, quantized for
// the file's type, are converted once per call to the interleaved kernels' blocks (the same int8
// values and scales: the products are those of the repacked path, bit for bit). Rows left over
// (fewer than 16) and calls with fewer than kPackedMatmulMinTokens tokens keep the GGUF-layout
// kernels (kernels bench qmatmul at 4 tokens, Ice Lake VM: packing won for Q4_0 / Q4_K, lost
// for Q8_0 on AVX-512; at 8 and more it won for every type, 1.3-2.9x).
// Ice Lake VM, 24 layers, two threads, pp512 in the file's layout (bench --synth --gguf-layout),
// GGUF-layout tiles -> packed: AVX-512 128 / 115 / 131 -> 285 / 271 / 243 GFLOP/s (q4_0 / q4_k /
// q8_0), AVX2 78 / 100 / 97 -> 166 / 156 / 117. The per-thread buffers grow to the largest call
// (16 rows, and T activation rows: at most ~3.6 MB for 512 tokens of a 5632-wide row) and stay.
#include <vector>

#include "ops/cpu/cpu_isa.h"
#include "quant/qdot_kernels.h"
#include "quant/qtypes.h"
#include "quant/repack.h"
#include "runtime/dtype.h"

namespace jetmoe::qdot_detail {
namespace {

// Per-thread buffers, grown to the largest call and kept (no allocation per call once warm).
struct PackBuffers {
  std::vector<uint8_t> group;  // 16 packed rows
  std::vector<uint8_t> act;    // T activation rows in the interleaved kernels' blocks
};

PackBuffers& buffers() {
  thread_local PackBuffers b;
  return b;
}

uint8_t* grown(std::vector<uint8_t>& v, size_t bytes) {
  if (v.size() < bytes) v.resize(bytes);
  return v.data();
}

}  // namespace

bool packed_matmul_applies(CpuIsa isa, DType wtype, int64_t rows, int64_t T) {
  // The packing and the activations' conversion are AVX2 code (repack_avx2.cpp,
  // activation_quant_avx2.cpp), which both SIMD ISAs run, built with the same flags.
  static const bool have_avx2 = avx2_pack_row_group() != nullptr && avx2_activation_convert() != nullptr;
  return have_avx2 && (isa == CpuIsa::Avx512 || isa == CpuIsa::Avx2) && T >= kPackedMatmulMinTokens &&
         rows >= kInterleaveRows && (wtype == DType::Q8_0 || wtype == DType::Q4_0 || wtype == DType::Q4_K);
}

void packed_matmul(CpuIsa isa, DType wtype, const MatArgs& a) {
  const KernelTable& table = kernel_table(isa);
  const DType packed = repacked_type(wtype);
  PackBuffers& buf = buffers();
  // The activations in the packed type's blocks, all tokens.
  const size_t xz_stride = static_cast<size_t>(a.nb) * (wtype == DType::Q4_K ? sizeof(BlockQ8_KS) : sizeof(BlockQ8_0Z));
  uint8_t* xz = grown(buf.act, xz_stride * static_cast<size_t>(a.T));
  static const ActivationConvertFns* const convert = avx2_activation_convert();
  for (int64_t t = 0; t < a.T; ++t) {
    const uint8_t* x = a.X + static_cast<size_t>(t) * a.x_stride;
    uint8_t* z = xz + static_cast<size_t>(t) * xz_stride;
    if (wtype == DType::Q4_K)
      convert->q8_ks(reinterpret_cast<const BlockQ8_K*>(x), reinterpret_cast<BlockQ8_KS*>(z), a.nb);
    else
      convert->q8_0z(reinterpret_cast<const BlockQ8_0*>(x), reinterpret_cast<BlockQ8_0Z*>(z), a.nb,
                     wtype == DType::Q8_0 ? 128 : 8);
  }
  uint8_t* group = grown(buf.group, static_cast<size_t>(kInterleaveRows) * a.w_stride);
  static const PackGroupFn pack = avx2_pack_row_group();
  MatArgs p = a;
  p.W = group;
  p.X = xz;
  p.x_stride = xz_stride;
  p.r0 = 0;
  p.r1 = kInterleaveRows;
  int64_t r = a.r0;
  for (; r + kInterleaveRows <= a.r1; r += kInterleaveRows) {
    pack(kernel_index(wtype), a.W + static_cast<size_t>(r) * a.w_stride, a.nb, a.w_stride, group);
    p.Y = a.Y + r;
    table.matmul[kernel_index(packed)](p);
  }
  if (r < a.r1) {  // the rest in the file's layout
    MatArgs rest = a;
    rest.r0 = r;
    table.matmul[kernel_index(wtype)](rest);
  }
}

}  // namespace jetmoe::qdot_detail
