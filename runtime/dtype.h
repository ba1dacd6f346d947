// Element types of tensors, and the scalar conversions between the 16-bit floats and float.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace jetmoe {

// Storage type of a tensor. Block-quantized types store `block_elems()` weights in
// `block_bytes()` bytes; plain types have a block of one element.
enum class DType : uint8_t {
  F32,
  F16,
  BF16,
  Q8_0,  // 32 int8 weights + one fp16 scale (GGUF Q8_0 layout, 34 bytes)
  Q4_0,  // 32 int4 weights + one fp16 scale (GGUF Q4_0 layout, 18 bytes)
  Q4_K,  // 256-weight super-block, 6-bit sub-block scales and mins (GGUF Q4_K layout, 144 bytes)
  // Q8_0 / Q4_0 / Q4_K repacked for the CPU's AVX-512 and AVX2 kernels, in memory only (never in a file): the
  // same blocks, interleaved 16 rows at a time (layout in quant/qtypes.h, "Interleaved 16-row
  // layout"), for matrices whose row count is a multiple of 16. A group of 16 rows takes the bytes
  // those rows took, so row_bytes, expert offsets and 16-aligned row ranges are unchanged; one
  // 512-bit load (or two 256-bit ones) holds 4 weights of each of 16 rows, so the kernels need no
  // byte shuffles and no horizontal sums (quant/repack.h).
  Q8_0R,
  Q4_0R,
  Q4_KR,  // Q4_K interleaved the same way (layout in quant/qtypes.h)
};

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::Q8_0: return "Q8_0";
    case DType::Q4_0: return "Q4_0";
    case DType::Q4_K: return "Q4_K";
    case DType::Q8_0R: return "Q8_0R";
    case DType::Q4_0R: return "Q4_0R";
    case DType::Q4_KR: return "Q4_KR";
  }
  return "?";
}

inline size_t dtype_block_elems(DType t) {
  switch (t) {
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q8_0R:
    case DType::Q4_0R: return 32;
    case DType::Q4_K:
    case DType::Q4_KR: return 256;
    default: return 1;
  }
}

inline size_t dtype_block_bytes(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16:
    case DType::BF16: return 2;
    case DType::Q8_0:
    case DType::Q8_0R: return 34;
    case DType::Q4_0:
    case DType::Q4_0R: return 18;
    case DType::Q4_K:
    case DType::Q4_KR: return 144;
  }
  return 0;
}

inline bool dtype_is_quantized(DType t) { return dtype_block_elems(t) > 1; }

// Bytes of one row of `n` elements (n must be a multiple of the block size for quantized types).
inline size_t dtype_row_bytes(DType t, size_t n) {
  return n / dtype_block_elems(t) * dtype_block_bytes(t);
}

// ---- bf16 / fp16 <-> fp32, scalar reference conversions -----------------------------------

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even, as PyTorch does; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ffu;
      u = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (mant << 13);
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even; overflow goes to infinity.
inline uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t absu = u & 0x7fffffffu;
  if (absu > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  if (absu >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520: inf
  if (absu < 0x38800000u) {  // below the smallest normal half: subnormal or zero
    if (absu < 0x33000000u) return static_cast<uint16_t>(sign);  // < 2^-25 rounds to 0
    const uint32_t exp = absu >> 23;
    const uint32_t mant = (absu & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - exp;  // 14 + (113 - exp) - 1 ... see below
    // value = mant * 2^(exp-150); half subnormal unit = 2^-24 -> q = mant >> (126 - exp)
    uint32_t q = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  uint32_t r = absu + 0xfffu + ((absu >> 13) & 1u);
  r -= 0x38000000u;  // rebias exponent 127 -> 15
  return static_cast<uint16_t>(sign | (r >> 13));
}

}  // namespace jetmoe
