// AVX2 packing of 16 GGUF-layout rows into one interleaved group (the bytes quant/repack.h's
// repack_rows gives them), for prefill on a mapped file (quant/qmatmul_packed.cpp), which packs
// every group of rows it multiplies. The layouts are a transpose of 4-byte words: word k of row
// i's quants goes to line k, lane i. The load-time repack copies those words one by one (16 x 8
// per Q8_0 block); here 8 rows x 8 words are one 8x8 transpose in registers (24 unpacks and lane
// permutes), and Q4_0's 16 rows x 4 words four 4x4 transposes.
//
// Compiled with the AVX2 flags: everything in an anonymous namespace, only intrinsics (see
// qdot_avx2.cpp).
#include "quant/qdot_kernels.h"
#include "quant/qtypes.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

namespace jetmoe::qdot_detail {
namespace {

inline __m256i load32(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

// Word k of rows src[0..7] (8 words each, 32 bytes) to dst + k * line, k = 0..7 (32 bytes each).
inline void transpose8x8(const uint8_t* const (&src)[8], uint8_t* dst, size_t line) {
  __m256i r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) r[i] = load32(src[i]);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);      // words 0 1 | 4 5 of rows i, i + 1, interleaved
    t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);  // words 2 3 | 6 7
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);          // word 0 | 4 of rows i .. i + 3
    u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);      // word 1 | 5
    u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);  // word 2 | 6
    u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);  // word 3 | 7
  }
  for (int k = 0; k < 4; ++k) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k * line), _mm256_permute2x128_si256(u[k], u[k + 4], 0x20));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + (k + 4) * line), _mm256_permute2x128_si256(u[k], u[k + 4], 0x31));
  }
}

// Word k of rows src[0..3] (4 words each, 16 bytes) to dst + k * line, k = 0..3 (16 bytes each).
inline void transpose4x4(const uint8_t* const (&src)[4], uint8_t* dst, size_t line) {
  __m128i r[4];
  for (int i = 0; i < 4; ++i) r[i] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src[i]));
  const __m128i t0 = _mm_unpacklo_epi32(r[0], r[1]), t1 = _mm_unpackhi_epi32(r[0], r[1]);
  const __m128i t2 = _mm_unpacklo_epi32(r[2], r[3]), t3 = _mm_unpackhi_epi32(r[2], r[3]);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm_unpacklo_epi64(t0, t2));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + line), _mm_unpackhi_epi64(t0, t2));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 2 * line), _mm_unpacklo_epi64(t1, t3));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 3 * line), _mm_unpackhi_epi64(t1, t3));
}

// Q8_0 / Q4_0: block b of the 16 rows to its place (quant/qtypes.h, interleaved_block).
void pack_q8_0_or_q4_0(bool q8, const uint8_t* rows, int64_t nb, size_t rb, uint8_t* dst) {
  const size_t qb = q8 ? kQK8_0 : kQK4_0 / 2, bb = qb + 2;
  for (int64_t b = 0; b < nb; ++b) {
    const InterleavedBlock o = interleaved_block(qb, nb, b);
    const uint8_t* blk = rows + static_cast<size_t>(b) * bb;  // row i's block at blk + i * rb
    if (q8) {
      for (int h = 0; h < 2; ++h) {
        const uint8_t* src[8];
        for (int i = 0; i < 8; ++i) src[i] = blk + static_cast<size_t>(8 * h + i) * rb + 2;
        transpose8x8(src, dst + o.quants + 32 * h, 64);
      }
    } else {
      for (int q = 0; q < 4; ++q) {
        const uint8_t* src[4];
        for (int i = 0; i < 4; ++i) src[i] = blk + static_cast<size_t>(4 * q + i) * rb + 2;
        transpose4x4(src, dst + o.quants + 16 * q, 64);
      }
    }
    for (int i = 0; i < kInterleaveRows; ++i) std::memcpy(dst + o.scales + 2 * i, blk + static_cast<size_t>(i) * rb, 2);
  }
}

// Q4_K: super-block b's 32 quant words per row to its 32 quant lines (chunk c, register k = quant
// line 8c + k), its 3 scale words to the 3 scale lines, d and dmin to their 16-entry arrays.
void pack_q4_k(const uint8_t* rows, int64_t nb, size_t rb, uint8_t* dst) {
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t* out = dst + kQ4KRBlockBytes * static_cast<size_t>(b);
    const uint8_t* blk = rows + sizeof(BlockQ4_K) * static_cast<size_t>(b);
    for (int h = 0; h < 2; ++h)
      for (int w = 0; w < 4; ++w) {  // quant words 8w .. 8w + 7
        const uint8_t* src[8];
        for (int i = 0; i < 8; ++i) src[i] = blk + static_cast<size_t>(8 * h + i) * rb + offsetof(BlockQ4_K, qs) + 32 * w;
        transpose8x8(src, out + q4kr_quant_line(w, 0) + 32 * h, 64);
      }
    for (int i = 0; i < kInterleaveRows; ++i) {
      const uint8_t* row = blk + static_cast<size_t>(i) * rb;
      for (int r = 0; r < 3; ++r) std::memcpy(out + kQ4KRScales + 64 * r + 4 * i, row + offsetof(BlockQ4_K, scales) + 4 * r, 4);
      std::memcpy(out + kQ4KRd + 2 * i, row + offsetof(BlockQ4_K, d), 2);
      std::memcpy(out + kQ4KRdmin + 2 * i, row + offsetof(BlockQ4_K, dmin), 2);
    }
  }
}

}  // namespace

namespace {
void pack_row_group_avx2(int kernel_index, const uint8_t* rows, int64_t nb, size_t rb, uint8_t* dst) {
  if (kernel_index == 2) return pack_q4_k(rows, nb, rb, dst);
  pack_q8_0_or_q4_0(kernel_index == 0, rows, nb, rb, dst);
}
}  // namespace

PackGroupFn avx2_pack_row_group() { return pack_row_group_avx2; }

}  // namespace jetmoe::qdot_detail

#else  // built without AVX2 support in the compiler flags

namespace jetmoe::qdot_detail {
PackGroupFn avx2_pack_row_group() { return nullptr; }
}  // namespace jetmoe::qdot_detail

#endif
