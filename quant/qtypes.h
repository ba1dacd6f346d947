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

// ---- Interleaved 16-row layout of Q8_0R / Q4_0R (in memory only; runtime/dtype.h; Q4_KR below) --
// A matrix whose row count is a multiple of 16 is held as groups of 16 rows; group g takes the
// same 16 * row_bytes bytes that rows 16g .. 16g + 15 took in the GGUF layout. Inside a group the
// blocks come in pairs (the last one alone when a row has an odd number of blocks); a pair of
// blocks b, b + 1 is
//   [16 fp16 scales of b][16 fp16 scales of b + 1][quants of b][quants of b + 1]
// (a lone last block: [quants][scales], so that its quants stay on whole lines), and the quants
// of one block are QB / 4 chunks of 64 bytes (QB = 32 quant bytes per block for Q8_0, 16 for
// Q4_0): chunk k holds, at bytes 4i .. 4i + 3, bytes 4k .. 4k + 3 of row i's GGUF quant bytes. So
// one 512-bit load is one int32 lane per row, and a block's dot products for 16 rows are QB / 4
// (Q8_0) or QB / 2 (Q4_0: low and high nibbles) VNNI instructions against 4 broadcast activation
// bytes each, with no horizontal sums; a pair is 17 (Q8_0) or 9 (Q4_0) whole 64-byte lines, so
// every load is aligned and a group is one sequential stream, read front to back: the scales
// come first because a kernel wants them with (or before) the quants, and with them at the end
// each pair began with a jump ahead and back (Zen 3, AVX2 decode from memory at two threads, in
// one process: Q8_0R 1.08-1.09x, Q4_0R 1.00-1.01x with the scales first; docs/performance.md).
inline constexpr int kInterleaveRows = 16;

// A pair of blocks of quant_bytes each: its size, and the offsets inside it of the two blocks'
// scales (64 bytes in all) and then of block 0's and block 1's quants.
inline constexpr size_t kPairScaleBytes = 4 * kInterleaveRows;
constexpr size_t pair_bytes(size_t quant_bytes) { return kPairScaleBytes + 2 * kInterleaveRows * quant_bytes; }
constexpr size_t pair_scales(size_t in_pair) { return in_pair * 2 * kInterleaveRows; }
constexpr size_t pair_quants(size_t quant_bytes, size_t in_pair) {
  return kPairScaleBytes + in_pair * kInterleaveRows * quant_bytes;
}

// Byte offsets, from the start of a row group, of block b's quants and of its 16 scales.
struct InterleavedBlock {
  size_t quants;
  size_t scales;
};

static inline InterleavedBlock interleaved_block(size_t quant_bytes, int64_t nb, int64_t b) {
  const size_t q16 = static_cast<size_t>(kInterleaveRows) * quant_bytes;  // one block's quants
  const size_t pair = static_cast<size_t>(b / 2) * pair_bytes(quant_bytes);
  const size_t in_pair = static_cast<size_t>(b % 2);
  if ((b / 2) * 2 + 1 < nb) return {pair + pair_quants(quant_bytes, in_pair), pair + pair_scales(in_pair)};
  return {pair, pair + q16};  // the lone last block
}

// Row i (< 16) of a group: block b's GGUF quant bytes gathered into qs[0 .. quant_bytes), and its
// fp16 scale. The scalar kernels, dequantization and unpacking read rows through this.
static inline uint16_t interleaved_row_block(const uint8_t* group, size_t quant_bytes, int64_t nb, int64_t b,
                                             int i, uint8_t* qs) {
  const InterleavedBlock o = interleaved_block(quant_bytes, nb, b);
  for (size_t k = 0; k < quant_bytes / 4; ++k)
    std::memcpy(qs + 4 * k, group + o.quants + 64 * k + 4 * static_cast<size_t>(i), 4);
  uint16_t d;
  std::memcpy(&d, group + o.scales + 2 * static_cast<size_t>(i), 2);
  return d;
}

// Activations for the Q8_0R / Q4_0R kernels: the Q8_0 block (the same int8 values and the same
// fp16-rounded scale, as a float) plus the weight format's zero-point term, so the integer dot
// products can take the weights as unsigned bytes: zsum = -128 * sum(qs) for Q8_0R (weights are
// fed as w ^ 0x80 = w + 128), -8 * sum(qs) for Q4_0R (nibbles q, value q - 8).
struct BlockQ8_0Z {
  int8_t qs[kQK8_0];
  float d;
  int32_t zsum;
};
static_assert(sizeof(BlockQ8_0Z) == 40, "BlockQ8_0Z must be 40 bytes");

// Q4_KR: the same 16-row groups for Q4_K. Super-block b of a group is 2304 bytes (16 x 144, so
// 36 whole 64-byte lines) at 2304 * b:
//   [scales: 3 x 64 bytes][16 fp16 d][16 fp16 dmin][quants: 4 chunks x 8 x 64 bytes]
// The factors come first because the kernels read them first: a super-block is then read front
// to back, one forward stream that the hardware prefetcher follows (with them at the end, each
// super-block began with a jump 2 KiB ahead and back; docs/performance.md).
// Quant chunk c, register k holds, at bytes 4i .. 4i + 3, bytes 32c + 4k .. 32c + 4k + 3 of row
// i's GGUF quants (low nibbles: sub-block 2c, high nibbles: sub-block 2c + 1, elements 4k..4k+3
// of each); scale register s holds bytes 4s .. 4s + 3 of row i's 12 packed scale bytes, so the
// 6-bit scales and mins of 16 rows unpack with a few whole-register operations.
inline constexpr size_t kQ4KRBlockBytes = 16 * 144;
inline constexpr size_t kQ4KRScales = 0, kQ4KRd = 192, kQ4KRdmin = 224, kQ4KRQuants = 256;
// Offset in a super-block of quant chunk c's register k (64 bytes: 16 rows x 4 bytes).
constexpr size_t q4kr_quant_line(size_t c, size_t k) { return kQ4KRQuants + 512 * c + 64 * k; }

// Row i (< 16) of a Q4_KR group: super-block b back in its GGUF form.
static inline void q4kr_row_block(const uint8_t* group, int64_t b, int i, BlockQ4_K* out) {
  const uint8_t* blk = group + kQ4KRBlockBytes * static_cast<size_t>(b);
  const size_t lane = 4 * static_cast<size_t>(i);
  for (size_t c = 0; c < 4; ++c)
    for (size_t k = 0; k < 8; ++k) std::memcpy(out->qs + 32 * c + 4 * k, blk + q4kr_quant_line(c, k) + lane, 4);
  for (size_t r = 0; r < 3; ++r) std::memcpy(out->scales + 4 * r, blk + kQ4KRScales + 64 * r + lane, 4);
  std::memcpy(&out->d, blk + kQ4KRd + 2 * static_cast<size_t>(i), 2);
  std::memcpy(&out->dmin, blk + kQ4KRdmin + 2 * static_cast<size_t>(i), 2);
}

// Activations for the Q4_KR kernels: a Q8_K block with the sums of its 8 sub-blocks of 32 (the
// mins' multipliers) instead of the 16 sums of 16.
struct BlockQ8_KS {
  float d;
  int8_t qs[kQK_K];
  int16_t ssum[8];
};
static_assert(sizeof(BlockQ8_KS) == 276, "BlockQ8_KS must be 276 bytes");

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
