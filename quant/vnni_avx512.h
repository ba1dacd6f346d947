// Two building blocks of the AVX-512 VNNI kernels of the interleaved layouts
// (qdot_interleaved_avx512.cpp: Q8_0R / Q4_0R; qdot_q4kr_avx512.cpp: Q4_KR). Include only from
// files compiled with AVX-512 flags. Static inline for the reason quant/stream_prefetch.h gives:
// an inline function with external linkage could reach portable code compiled with these flags.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace jetmoe::qdot_detail {

// The 4 bytes at p in every int32 lane (a register that several dot products reuse: prefill).
static inline __m512i bcast4(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// acc + the dot product of each int32 lane's 4 unsigned bytes of w with the 4 signed bytes at p
// (vpdpbusd with p as a {1to16} broadcast memory operand). The one-token kernels stream their
// weights at a rate set by how many instructions they issue per byte, not by the arithmetic
// units: the broadcast folded into the dot product is one fused instruction where the
// intrinsics give two (GCC 12 emits a separate vpbroadcastd for _mm512_set1_epi32 of a load),
// and the two 4-bit decode loops lose a third of their instructions. Xeon VM, a harness
// alternating each kernel with the read probe in one process (400 MB per pass, median of 41
// per-pass ratios, 2048 x 5632 matrices, two threads): Q4_0R 97.8 -> 99.9% of the probe, Q4_KR
// 91.4 -> 95.0%; 11264 x 2048, two threads: Q4_0R 97.2 -> 98.1%, Q4_KR 93.8 -> 97.1%.
static inline __m512i dpbusd_bcast4(__m512i acc, __m512i w, const void* p) {
  struct Bytes4 {
    char b[4];  // the operand's type for the compiler: 4 bytes, any alignment, aliasing anything
  };
  asm("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*static_cast<const Bytes4*>(p)));
  return acc;
}

}  // namespace jetmoe::qdot_detail
