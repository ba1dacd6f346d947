// Device-side reads of the weight and KV-cache formats (runtime/dtype.h, quant/qtypes.h), 32
// consecutive elements of a row at a time: every weight type has a whole number of 32-element
// groups per row (Q4_K's 256-element super-block is 8 of them), so one loop over groups serves
// all of them. Weights stay in their stored bytes in device memory; these widen only registers.
// Repacked CPU layouts (Q8_0R, Q4_0R, Q4_KR) never reach the device: the upload unpacks them.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "runtime/dtype.h"

namespace jetmoe::cuda {

__device__ __forceinline__ float half_bits_to_float(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ float bf16_bits_to_float(uint16_t h) { return __uint_as_float(static_cast<uint32_t>(h) << 16); }

__device__ __forceinline__ uint16_t load_u16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | (static_cast<uint16_t>(p[1]) << 8));  // blocks are 2-byte aligned at best
}

// out[0..32) = elements 32g .. 32g+31 of a row of `cols` elements of type T at `row`. Float types
// give 0 past `cols` (their rows need not be a multiple of 32); block types always have whole groups.
template <DType T>
__device__ __forceinline__ void load_group(const uint8_t* row, int64_t g, int64_t cols, float out[32]) {
  if constexpr (T == DType::F32) {
    const float* r = reinterpret_cast<const float*>(row) + 32 * g;
    const int64_t n = cols - 32 * g;
    if (n >= 32 && (reinterpret_cast<uintptr_t>(r) & 15) == 0) {
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const float4 v = reinterpret_cast<const float4*>(r)[i];
        out[4 * i] = v.x, out[4 * i + 1] = v.y, out[4 * i + 2] = v.z, out[4 * i + 3] = v.w;
      }
    } else {
#pragma unroll
      for (int i = 0; i < 32; ++i) out[i] = i < n ? r[i] : 0.0f;
    }
  } else if constexpr (T == DType::F16 || T == DType::BF16) {
    const uint16_t* r = reinterpret_cast<const uint16_t*>(row) + 32 * g;
    const int64_t n = cols - 32 * g;
    if (n >= 32 && (reinterpret_cast<uintptr_t>(r) & 15) == 0) {  // four 16-byte loads
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const uint4 v = __ldg(reinterpret_cast<const uint4*>(r) + i);
        const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const uint16_t lo = static_cast<uint16_t>(w[j] & 0xffffu), hi = static_cast<uint16_t>(w[j] >> 16);
          out[8 * i + 2 * j] = T == DType::F16 ? half_bits_to_float(lo) : bf16_bits_to_float(lo);
          out[8 * i + 2 * j + 1] = T == DType::F16 ? half_bits_to_float(hi) : bf16_bits_to_float(hi);
        }
      }
    } else {
#pragma unroll
      for (int i = 0; i < 32; ++i) {
        const uint16_t h = i < n ? r[i] : 0;
        out[i] = T == DType::F16 ? half_bits_to_float(h) : bf16_bits_to_float(h);
      }
    }
  } else if constexpr (T == DType::Q8_0) {
    // 34-byte blocks are 2-byte aligned: the scale and 16 pairs of int8 as 17 16-bit loads.
    const uint16_t* b = reinterpret_cast<const uint16_t*>(row + 34 * g);
    const float d = half_bits_to_float(__ldg(b));
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const uint16_t w = __ldg(b + 1 + i);
      out[2 * i] = d * static_cast<float>(static_cast<int8_t>(w & 0xff));
      out[2 * i + 1] = d * static_cast<float>(static_cast<int8_t>(w >> 8));
    }
  } else if constexpr (T == DType::Q4_0) {
    // 18-byte blocks: the scale and 16 bytes of nibbles as 9 16-bit loads.
    const uint16_t* b = reinterpret_cast<const uint16_t*>(row + 18 * g);
    const float d = half_bits_to_float(__ldg(b));
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const uint16_t w = __ldg(b + 1 + i);
      const int lo = w & 0xff, hi = w >> 8;
      out[2 * i] = d * static_cast<float>((lo & 0x0f) - 8);
      out[2 * i + 16] = d * static_cast<float>((lo >> 4) - 8);
      out[2 * i + 1] = d * static_cast<float>((hi & 0x0f) - 8);
      out[2 * i + 17] = d * static_cast<float>((hi >> 4) - 8);
    }
  } else if constexpr (T == DType::Q4_K) {
    // Super-block g / 8 (144 bytes: fp16 d, fp16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes of
    // nibbles); sub-block s = g % 8 is the low (s even) or high (s odd) nibbles of qs[32 (s/2) ..].
    const uint8_t* b = row + 144 * (g / 8);
    const int s = static_cast<int>(g % 8);
    const float d = half_bits_to_float(load_u16(b)), dmin = half_bits_to_float(load_u16(b + 2));
    const uint8_t* sc = b + 4;
    int scale, mn;
    if (s < 4) {
      scale = sc[s] & 63;
      mn = sc[s + 4] & 63;
    } else {
      scale = (sc[s + 4] & 0x0f) | ((sc[s - 4] >> 6) << 4);
      mn = (sc[s + 4] >> 4) | ((sc[s] >> 6) << 4);
    }
    const float d1 = d * static_cast<float>(scale), m1 = dmin * static_cast<float>(mn);
    const uint8_t* q = b + 16 + 32 * (s / 2);
    const int shift = (s & 1) * 4;
    if ((reinterpret_cast<uintptr_t>(q) & 15) == 0) {  // two 16-byte loads
      const uint4 v0 = __ldg(reinterpret_cast<const uint4*>(q)), v1 = __ldg(reinterpret_cast<const uint4*>(q) + 1);
      const uint32_t w[8] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w};
#pragma unroll
      for (int i = 0; i < 32; ++i) out[i] = d1 * static_cast<float>((w[i / 4] >> (8 * (i % 4) + shift)) & 0x0f) - m1;
    } else {
#pragma unroll
      for (int i = 0; i < 32; ++i) out[i] = d1 * static_cast<float>((q[i] >> shift) & 0x0f) - m1;
    }
  }
}

// Element i of a KV-cache row of type t (F32, F16, BF16 or Q8_0; runtime/kv_cache.h).
__device__ __forceinline__ float kv_element(DType t, const uint8_t* row, int i) {
  switch (t) {
    case DType::F32: return reinterpret_cast<const float*>(row)[i];
    case DType::F16: return half_bits_to_float(reinterpret_cast<const uint16_t*>(row)[i]);
    case DType::BF16: return bf16_bits_to_float(reinterpret_cast<const uint16_t*>(row)[i]);
    default: {  // Q8_0
      const uint8_t* b = row + 34 * (i / 32);
      return half_bits_to_float(load_u16(b)) * static_cast<float>(reinterpret_cast<const int8_t*>(b + 2)[i % 32]);
    }
  }
}

}  // namespace jetmoe::cuda
