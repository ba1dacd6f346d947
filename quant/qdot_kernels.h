// Internal: the per-ISA kernel tables behind quant/qdot.h, and the row x token tiling driver.
// Included by the SIMD translation units: only types, templates and static functions here.
#pragma once

#include <cstddef>
#include <cstdint>

// True in translation units compiled with the AVX-512 kernel flags (CMakeLists.txt, *_avx512.cpp):
// the two files that hold the AVX-512 kernels and their table agree on it.
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__) && \
    defined(__AVX512VNNI__) && defined(__AVX512VBMI__) && defined(__F16C__)
#define JETMOE_QDOT_AVX512 1
#else
#define JETMOE_QDOT_AVX512 0
#endif

namespace jetmoe {
struct BlockQ8_0;
struct BlockQ8_K;
struct BlockQ8_0Z;
struct BlockQ8_KS;
enum class CpuIsa;           // ops/cpu/cpu_isa.h
enum class DType : uint8_t;  // runtime/dtype.h
}  // namespace jetmoe

namespace jetmoe::qdot_detail {

// One matmul / matvec job. Matvec is T = 1, ldy = 0.
struct MatArgs {
  const uint8_t* W;  // weight row 0
  size_t w_stride;   // bytes per weight row
  const uint8_t* X;  // activation row 0
  size_t x_stride;   // bytes per activation row
  int64_t nb;        // blocks per row (32-blocks for Q8_0/Q4_0, 256-blocks for Q4_K)
  float* Y;
  int64_t ldy;
  int64_t T;
  int64_t r0, r1;
  size_t prefetch = 0;  // one-token kernels: prefetch distance in bytes (0 = none; quant/stream_prefetch.h)
  size_t prefetch_l1 = 0;  // and the shorter one into L1 (l1_prefetch_bytes(prefetch))
  size_t touch = 0;        // and one demand load this far ahead every ~2 KiB (touch_line; 0 = none)
  bool rolled = false;     // Q8_0R / Q4_0R / Q4_KR one-token kernels: their rolled loops (DecodeStream::rolled)
  bool two_streams = false;  // AVX2 Q8_0R / Q4_0R / Q4_KR one-token kernels: the row range's halves read in turn (DecodeStream)
};

using KernelFn = void (*)(const MatArgs&);

// Index by weight type: 0 = Q8_0, 1 = Q4_0, 2 = Q4_K, 3 = Q8_0R, 4 = Q4_0R, 5 = Q4_KR (the
// interleaved layouts; their activations are BlockQ8_0Z / BlockQ8_KS rows).
struct KernelTable {
  KernelFn matvec[6];
  KernelFn matmul[6];
};

const KernelTable& scalar_kernels();
// The scalar kernels of the repacked types (matvec and matmul alike), for the other tables.
void scalar_q8_0r(const MatArgs& a);
void scalar_q4_0r(const MatArgs& a);
void scalar_q4_kr(const MatArgs& a);
const KernelTable& avx2_kernels();    // scalar table when built without AVX2
const KernelTable& avx512_kernels();  // scalar table when built without AVX-512
// The table of one ISA (one of the three above), and a weight type's index in it (-1: none).
const KernelTable& kernel_table(CpuIsa isa);
int kernel_index(DType t);
// A kernel's arguments for rows [row_begin, row_end) of W (n values each) against T activation
// rows X (quantized for wtype), outputs Y[t * ldy + r], with the one-token plan of `isa` when
// T = 1 (quant/stream_prefetch.h); throws std::invalid_argument naming `what` on a bad row
// length or range (quant/qdot.cpp).
MatArgs make_args(CpuIsa isa, DType wtype, const void* W, int64_t row_begin, int64_t row_end, int64_t n,
                  const void* X, int64_t T, float* Y, int64_t ldy, const char* what);

// The AVX2 one-token kernels of qmatvec_avx2.cpp (GGUF layouts; defined only in builds with AVX2
// flags); rows longer than avx2_matvec_max_elems() must use the tiled kernels.
void avx2_matvec_q8_0(const MatArgs& a);
void avx2_matvec_q4_0(const MatArgs& a);
void avx2_matvec_q4_k(const MatArgs& a);
int64_t avx2_matvec_max_elems();
// The AVX2 kernels of the interleaved Q8_0R / Q4_0R (qdot_interleaved_avx2.cpp) and Q4_KR
// (qdot_q4kr_avx2.cpp): any row length; row ranges in whole 16-row groups.
void avx2_matvec_q8_0r(const MatArgs& a);
void avx2_matvec_q4_0r(const MatArgs& a);
void avx2_matmul_q8_0r(const MatArgs& a);
void avx2_matmul_q4_0r(const MatArgs& a);
void avx2_matvec_q4_kr(const MatArgs& a);
void avx2_matmul_q4_kr(const MatArgs& a);
// The AVX-512 one-token kernels of qmatvec_avx512.cpp (defined only in builds with AVX-512
// flags); rows longer than avx512_matvec_max_elems() must use the tiled kernels.
void avx512_matvec_q8_0(const MatArgs& a);
void avx512_matvec_q4_0(const MatArgs& a);
void avx512_matvec_q4_k(const MatArgs& a);
int64_t avx512_matvec_max_elems();
// The AVX-512 kernels of the interleaved Q8_0R / Q4_0R (qdot_interleaved_avx512.cpp): any row
// length; row ranges in whole 16-row groups.
void avx512_matvec_q8_0r(const MatArgs& a);
void avx512_matvec_q4_0r(const MatArgs& a);
void avx512_matmul_q8_0r(const MatArgs& a);
void avx512_matmul_q4_0r(const MatArgs& a);
// ... and of Q4_KR (qdot_q4kr_avx512.cpp).
void avx512_matvec_q4_kr(const MatArgs& a);
void avx512_matmul_q4_kr(const MatArgs& a);

// Activation quantization for the interleaved kernels, per ISA (activation_quant_avx512.cpp);
// bit-identical to the scalar code in qdot.cpp. nullptr where the build has no AVX-512 kernels.
struct ActivationQuantFns {
  void (*q8_0z)(const float* x, BlockQ8_0Z* b, int64_t nb, int32_t zero_point);  // Q8_0R / Q4_0R
  void (*q8_ks)(const float* x, BlockQ8_KS* b, int64_t nb);                       // Q4_KR
};
const ActivationQuantFns* avx512_activation_quant();
// ... and for the GGUF-layout kernels (activation_quant_avx2.cpp, also used where the AVX-512
// kernels run); nullptr where the build has no AVX2 code.
struct GgufActivationQuantFns {
  void (*q8_0)(const float* x, BlockQ8_0* b, int64_t nb);  // Q8_0 / Q4_0 weights
  void (*q8_k)(const float* x, BlockQ8_K* b, int64_t nb);  // Q4_K weights
};
const GgufActivationQuantFns* avx2_activation_quant();
// The interleaved types' activations in AVX2 (activation_quant_avx2.cpp, for the AVX2 kernels of
// those types); nullptr where the build has no AVX2 code.
const ActivationQuantFns* avx2_interleaved_activation_quant();
// Q8_0 / Q8_K activation blocks (quantized for the GGUF-layout types) converted to the interleaved
// kernels' BlockQ8_0Z / BlockQ8_KS, the bytes quantization would give (for qmatmul_packed.cpp);
// nullptr where the build has no AVX2 code.
struct ActivationConvertFns {
  void (*q8_0z)(const BlockQ8_0* x, BlockQ8_0Z* z, int64_t nb, int32_t zero_point);
  void (*q8_ks)(const BlockQ8_K* x, BlockQ8_KS* z, int64_t nb);
};
const ActivationConvertFns* avx2_activation_convert();

// Prefill on GGUF-layout weights through the interleaved kernels (qmatmul_packed.cpp): each
// whole run of 16 rows packed in a per-thread buffer, the activations converted; for the SIMD
// ISAs, Q8_0 / Q4_0 / Q4_K, and calls of at least kPackedMatmulMinTokens tokens and 16 rows.
inline constexpr int64_t kPackedMatmulMinTokens = 8;
// Packs 16 GGUF-layout rows (rb bytes apart from `rows`, nb blocks each) of weight type
// kernel_index (0 = Q8_0, 1 = Q4_0, 2 = Q4_K) into one interleaved group at dst: the bytes
// repack_rows (quant/repack.h) gives them (repack_avx2.cpp). nullptr where the build has no AVX2 code.
using PackGroupFn = void (*)(int kernel_index, const uint8_t* rows, int64_t nb, size_t rb, uint8_t* dst);
PackGroupFn avx2_pack_row_group();
bool packed_matmul_applies(CpuIsa isa, DType wtype, int64_t rows, int64_t T);
void packed_matmul(CpuIsa isa, DType wtype, const MatArgs& a);

// Drives K::tile<NR, NT>(args, r, t), which computes the NR x NT outputs for rows r.. and
// tokens t.., over the whole job; leftovers use smaller tiles.
template <class K, int NR, int NT>
static inline void drive_tokens(const MatArgs& a, int64_t r) {
  int64_t t = 0;
  for (; t + NT <= a.T; t += NT) K::template tile<NR, NT>(a, r, t);
  if constexpr (NT > 2) {
    if (t + 2 <= a.T) {
      K::template tile<NR, 2>(a, r, t);
      t += 2;
    }
  }
  if constexpr (NT > 1) {
    for (; t < a.T; ++t) K::template tile<NR, 1>(a, r, t);
  }
}

template <class K, int NR, int NT>
static inline void drive(const MatArgs& a) {
  int64_t r = a.r0;
  for (; r + NR <= a.r1; r += NR) drive_tokens<K, NR, NT>(a, r);
  if constexpr (NR > 2) {
    if (r + 2 <= a.r1) {
      drive_tokens<K, 2, NT>(a, r);
      r += 2;
    }
  }
  if constexpr (NR > 1) {
    for (; r < a.r1; ++r) drive_tokens<K, 1, NT>(a, r);
  }
}

}  // namespace jetmoe::qdot_detail
