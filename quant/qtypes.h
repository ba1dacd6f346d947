// Block layouts of the quantized weight formats (byte-exact GGUF/ggml layouts) and of the
// activation blocks the integer dot products consume.
//
// Everything here is plain data plus `static inline` helpers (internal linkage): this header is
// included by the per-ISA kernel files, which are compiled with SIMD flags, so it must not define
// any function with external linkage (an AVX2-compiled copy of an inline function could be picked
// by the linker for the scalar path and crash on a CPU without AVX2).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace jetmoe {

inline constexpr int kQK8_0 = 32;  // elements per Q8_0 block
inline constexpr int kQK4_0 = 32;  // elements per Q4_0 block
inline constexpr int kQK_K = 256;  // elements per k-quant super-block (Q4_K, Q8_K)
inline constexpr int kQ4KScaleBytes = 12;

// Q8_0: value[i] = d * qs[i]; d is fp16 (IEEE half bits). 34 bytes / 32 weights.
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK8_0];
};

// Q4_0: 32 4-bit quants q in [0,15], value = (q - 8) * d. Element j < 16 is the low nibble of
// qs[j], element j + 16 the high nibble of qs[j]. 18 bytes / 32 weights.
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQK4_0 / 2];
};

// Q4_K: 256-weight super-block = 8 sub-blocks of 32. Sub-block j has a 6-bit scale sc[j] and a
// 6-bit min m[j] packed into `scales` (see q4k_unpack_scales); value = d*sc[j]*q - dmin*m[j],
// q in [0,15]. The 128 quant bytes are 4 chunks of 32 bytes; chunk c holds sub-block 2c in the
// low nibbles and sub-block 2c+1 in the high nibbles (element 64c + l is the low nibble of
// qs[32c + l], element 64c + 32 + l the high nibble, l < 32). 144 bytes / 256 weights.
struct BlockQ4_K {
  uint16_t d;     // fp16 super-block scale of the sub-block scales
  uint16_t dmin;  // fp16 super-block scale of the sub-block mins
  uint8_t scales[kQ4KScaleBytes];
  uint8_t qs[kQK_K / 2];
};

// Q8_K (activations only): value[i] = d * qs[i], d is fp32; bsums[k] = sum of qs[16k .. 16k+15]
// (lets the Q4_K dot product apply the per-sub-block min with one multiply).
struct BlockQ8_K {
  float d;
  int8_t qs[kQK_K];
  int16_t bsums[kQK_K / 16];
};

static_assert(sizeof(BlockQ8_0) == 34, "Q8_0 block must be 34 bytes (GGUF layout)");
static_assert(sizeof(BlockQ4_0) == 18, "Q4_0 block must be 18 bytes (GGUF layout)");
static_assert(sizeof(BlockQ4_K) == 144, "Q4_K block must be 144 bytes (GGUF layout)");
static_assert(sizeof(BlockQ8_K) == 292, "Q8_K block must be 292 bytes");
static_assert(offsetof(BlockQ8_0, qs) == 2 && offsetof(BlockQ4_0, qs) == 2);
static_assert(offsetof(BlockQ4_K, dmin) == 2 && offsetof(BlockQ4_K, scales) == 4 &&
              offsetof(BlockQ4_K, qs) == 16);
static_assert(offsetof(BlockQ8_K, qs) == 4 && offsetof(BlockQ8_K, bsums) == 260);

// ---- Q4_K 6-bit scale packing (GGUF) ------------------------------------------------------
// bytes 0..3 : low 6 bits = sc[0..3], top 2 bits = bits 4..5 of sc[4..7]
// bytes 4..7 : low 6 bits = m[0..3],  top 2 bits = bits 4..5 of m[4..7]
// bytes 8..11: low nibble = bits 0..3 of sc[4..7], high nibble = bits 0..3 of m[4..7]

// Unpacks all 8 scales and mins at once with 32-bit word arithmetic: out[0..7] = sc, out[8..15] = m.
static inline void q4k_unpack_scales(const uint8_t* s, uint8_t out[16]) {
  uint32_t a, b, c;
  std::memcpy(&a, s, 4);
  std::memcpy(&b, s + 4, 4);
  std::memcpy(&c, s + 8, 4);
  const uint32_t sc_lo = a & 0x3f3f3f3fu;
  const uint32_t sc_hi = (c & 0x0f0f0f0fu) | (((a >> 6) & 0x03030303u) << 4);
  const uint32_t m_lo = b & 0x3f3f3f3fu;
  const uint32_t m_hi = ((c >> 4) & 0x0f0f0f0fu) | (((b >> 6) & 0x03030303u) << 4);
  std::memcpy(out, &sc_lo, 4);
  std::memcpy(out + 4, &sc_hi, 4);
  std::memcpy(out + 8, &m_lo, 4);
  std::memcpy(out + 12, &m_hi, 4);
}

// Packs 8 scales and 8 mins (each < 64) into the 12-byte GGUF form.
static inline void q4k_pack_scales(const uint8_t sc[8], const uint8_t m[8], uint8_t* s) {
  for (int j = 0; j < 4; ++j) {
    s[j] = static_cast<uint8_t>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    s[j + 4] = static_cast<uint8_t>((m[j] & 63) | ((m[j + 4] >> 4) << 6));
    s[j + 8] = static_cast<uint8_t>((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
  }
}

}  // namespace jetmoe
