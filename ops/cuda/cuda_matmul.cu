// Matrix products with weights of every stored type, dequantized in registers (never in memory).
//   Few tokens (decode, and experts that few prompt tokens chose): one warp per weight row; the
//   lanes walk the row's 32-element groups, so each weight byte is read once for all tokens.
//   Many tokens (prefill): 64 rows x 64 tokens per block, the weight tile widened into shared
//   memory once per 32 columns and reused by all 64 tokens.
#include <stdexcept>
#include <string>

#include "ops/cuda/cuda_check.h"
#include "ops/cuda/cuda_dequant.cuh"
#include "ops/cuda/cuda_kernels.h"

namespace jetmoe::cuda {
namespace {

constexpr int kGemvMaxTokens = 8;  // up to this many tokens take the one-warp-per-row kernel
constexpr int kGemvWarps = 8;      // rows per block
constexpr int kTile = 64;          // GEMM tile: rows and tokens
constexpr int kGemmThreads = 256;  // each thread 4 rows x 4 tokens

// One warp per weight row (blockIdx.x * kGemvWarps + warp). Plain product: T tokens of x against
// W. Expert mode (experts != nullptr): blockIdx.y is item i = t*k + j, which multiplies its own
// input row (x row i when per_slot, else t) by expert experts[i] of the stacked W into y row i.
struct GemvArgs {
  const float* x;
  int T;
  const uint8_t* w;
  size_t row_bytes;
  int64_t rows, cols;
  float* y;
  int64_t ldy;
  const int32_t* experts;  // expert mode when not null
  int64_t k, n_experts;
  bool per_slot;
  size_t expert_bytes;
};

template <DType Type>
__global__ void gemv_kernel(GemvArgs a) {
  const int lane = threadIdx.x & 31;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kGemvWarps + threadIdx.x / 32;
  if (r >= a.rows) return;
  const float* x = a.x;
  const uint8_t* w = a.w;
  float* y = a.y;
  int T = a.T;
  if (a.experts) {
    const int64_t item = blockIdx.y;
    const int32_t e = a.experts[item];
    if (e < 0 || e >= a.n_experts) return;  // route_topk never writes one; the CPU path throws
    x += (a.per_slot ? item : item / a.k) * a.cols;
    w += static_cast<size_t>(e) * a.expert_bytes;
    y += item * a.rows;
    T = 1;
  }
  const uint8_t* row = w + static_cast<size_t>(r) * a.row_bytes;
  const int64_t cols = a.cols, groups = (cols + 31) / 32;
  const bool x_vec = (cols % 4 == 0) && (reinterpret_cast<uintptr_t>(x) & 15) == 0;
  float acc[kGemvMaxTokens] = {};
  float v[32];
  for (int64_t g = lane; g < groups; g += 32) {
    load_group<Type>(row, g, cols, v);
    const int64_t c0 = 32 * g;
    const bool whole = c0 + 32 <= cols;
#pragma unroll
    for (int t = 0; t < kGemvMaxTokens; ++t) {
      if (t >= T) break;
      const float* xr = x + t * cols + c0;
      float s = 0.0f;
      if (whole && x_vec) {
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          const float4 xv = __ldg(reinterpret_cast<const float4*>(xr) + i);
          s += v[4 * i] * xv.x + v[4 * i + 1] * xv.y + v[4 * i + 2] * xv.z + v[4 * i + 3] * xv.w;
        }
      } else if (whole) {
#pragma unroll
        for (int i = 0; i < 32; ++i) s += v[i] * __ldg(xr + i);
      } else {  // the row's last, partial group (float types); unrolled so v stays in registers
#pragma unroll
        for (int i = 0; i < 32; ++i)
          if (c0 + i < cols) s += v[i] * __ldg(xr + i);
      }
      acc[t] += s;
    }
  }
#pragma unroll
  for (int t = 0; t < kGemvMaxTokens; ++t) {
    if (t >= T) break;
    float s = acc[t];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) y[t * a.ldy + r] = s;
  }
}

// One token against float weights (F32/F16/BF16) whose rows are whole 16-byte chunks: one warp per
// row, lane l reading chunks l, l + 32, ... (each warp load is 512 contiguous bytes), kChunksInFlight
// of them issued before any is used, so a warp keeps 4 KB of its row in flight. The decode case.
constexpr int kChunksInFlight = 8;

__device__ __forceinline__ float dot_chunk(DType type, const uint4& w, const float* x) {
  if (type == DType::F32) {
    const float4 xv = __ldg(reinterpret_cast<const float4*>(x));
    return __uint_as_float(w.x) * xv.x + __uint_as_float(w.y) * xv.y + __uint_as_float(w.z) * xv.z +
           __uint_as_float(w.w) * xv.w;
  }
  const float4 x0 = __ldg(reinterpret_cast<const float4*>(x)), x1 = __ldg(reinterpret_cast<const float4*>(x) + 1);
  const uint32_t ws[4] = {w.x, w.y, w.z, w.w};
  float f[8];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const uint16_t lo = static_cast<uint16_t>(ws[j] & 0xffffu), hi = static_cast<uint16_t>(ws[j] >> 16);
    f[2 * j] = type == DType::F16 ? half_bits_to_float(lo) : bf16_bits_to_float(lo);
    f[2 * j + 1] = type == DType::F16 ? half_bits_to_float(hi) : bf16_bits_to_float(hi);
  }
  return f[0] * x0.x + f[1] * x0.y + f[2] * x0.z + f[3] * x0.w + f[4] * x1.x + f[5] * x1.y + f[6] * x1.z +
         f[7] * x1.w;
}

template <DType Type>
__global__ void gemv_float_chunks_kernel(GemvArgs a) {
  constexpr int64_t kElems = Type == DType::F32 ? 4 : 8;  // elements per 16-byte chunk
  const int lane = threadIdx.x & 31;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kGemvWarps + threadIdx.x / 32;
  if (r >= a.rows) return;
  const float* x = a.x;
  const uint8_t* w = a.w;
  float* y = a.y;
  if (a.experts) {
    const int64_t item = blockIdx.y;
    const int32_t e = a.experts[item];
    if (e < 0 || e >= a.n_experts) return;
    x += (a.per_slot ? item : item / a.k) * a.cols;
    w += static_cast<size_t>(e) * a.expert_bytes;
    y += item * a.rows;
  }
  const uint4* row = reinterpret_cast<const uint4*>(w + static_cast<size_t>(r) * a.row_bytes);
  const int64_t chunks = a.cols / kElems;
  float acc = 0.0f;
  for (int64_t c0 = lane; c0 < chunks; c0 += 32 * kChunksInFlight) {
    uint4 wv[kChunksInFlight];
#pragma unroll
    for (int u = 0; u < kChunksInFlight; ++u) {
      const int64_t c = c0 + 32 * u;
      wv[u] = c < chunks ? __ldg(row + c) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kChunksInFlight; ++u) {
      const int64_t c = c0 + 32 * u;
      if (c < chunks) acc += dot_chunk(Type, wv[u], x + c * kElems);
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (lane == 0) y[r] = acc;
}

// Whether gemv_float_chunks_kernel can take a product: one token, float weights, whole 16-byte
// chunks per row, 16-byte aligned weights and activations.
bool float_chunks_fit(DType type, int64_t cols, const void* w, const float* x) {
  const int64_t elems = type == DType::F32 ? 4 : 8;
  return (type == DType::F32 || type == DType::F16 || type == DType::BF16) && cols % elems == 0 &&
         (reinterpret_cast<uintptr_t>(w) & 15) == 0 && (reinterpret_cast<uintptr_t>(x) & 15) == 0;
}

template <DType Type>
__global__ void gemm_kernel(const float* __restrict__ x, int64_t T, const uint8_t* __restrict__ w, size_t row_bytes,
                            int64_t rows, int64_t cols, float* __restrict__ y, int64_t ldy) {
  __shared__ float ws[kTile][33];  // weight rows x 32 columns (+1: no bank conflicts on the row walk)
  __shared__ float xs[kTile][33];  // tokens x 32 columns
  const int tid = threadIdx.x;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kTile, t0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int ty = tid / 16, tx = tid % 16;  // rows ty*4 .. +4, tokens tx*4 .. +4
  float acc[4][4] = {};
  const int64_t groups = (cols + 31) / 32;
  for (int64_t g = 0; g < groups; ++g) {
    if (tid < kTile) {
      float v[32];
      const int64_t r = r0 + tid;
      if (r < rows) {
        load_group<Type>(w + static_cast<size_t>(r) * row_bytes, g, cols, v);
      } else {
#pragma unroll
        for (int i = 0; i < 32; ++i) v[i] = 0.0f;
      }
#pragma unroll
      for (int i = 0; i < 32; ++i) ws[tid][i] = v[i];
    }
    for (int e = tid; e < kTile * 32; e += kGemmThreads) {
      const int tt = e / 32, c = e % 32;
      const int64_t t = t0 + tt, col = 32 * g + c;
      xs[tt][c] = (t < T && col < cols) ? x[t * cols + col] : 0.0f;
    }
    __syncthreads();
#pragma unroll 8
    for (int c = 0; c < 32; ++c) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = ws[ty * 4 + i][c], b[i] = xs[tx * 4 + i][c];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t r = r0 + ty * 4 + i;
    if (r >= rows) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t t = t0 + tx * 4 + j;
      if (t < T) y[t * ldy + r] = acc[i][j];
    }
  }
}

template <DType Type>
void launch_typed(const float* x, int64_t T, const void* w, int64_t rows, int64_t cols, float* y, int64_t ldy,
                  cudaStream_t stream) {
  const size_t rb = dtype_row_bytes(Type, static_cast<size_t>(cols));
  const auto* wb = static_cast<const uint8_t*>(w);
  if (T <= kGemvMaxTokens) {
    GemvArgs a{x, static_cast<int>(T), wb, rb, rows, cols, y, ldy, nullptr, 0, 0, false, 0};
    const dim3 grid(static_cast<unsigned>((rows + kGemvWarps - 1) / kGemvWarps));
    if constexpr (Type == DType::F32 || Type == DType::F16 || Type == DType::BF16) {
      if (T == 1 && float_chunks_fit(Type, cols, w, x)) {
        gemv_float_chunks_kernel<Type><<<grid, kGemvWarps * 32, 0, stream>>>(a);
        check_launch("matmul (one token, float weights)");
        return;
      }
    }
    gemv_kernel<Type><<<grid, kGemvWarps * 32, 0, stream>>>(a);
    check_launch("matmul (one warp per row)");
    return;
  }
  const dim3 grid(static_cast<unsigned>((rows + kTile - 1) / kTile), static_cast<unsigned>((T + kTile - 1) / kTile));
  gemm_kernel<Type><<<grid, kGemmThreads, 0, stream>>>(x, T, wb, rb, rows, cols, y, ldy);
  check_launch("matmul (tiled)");
}

template <DType Type>
void launch_expert_typed(const float* x, int64_t items, int64_t k, bool per_slot, const int32_t* experts, const void* w,
                         int64_t n_experts, int64_t rows, int64_t cols, float* y, cudaStream_t stream) {
  const size_t rb = dtype_row_bytes(Type, static_cast<size_t>(cols));
  GemvArgs a{x, 1, static_cast<const uint8_t*>(w), rb, rows, cols, y, rows, experts, k, n_experts, per_slot,
             rb * static_cast<size_t>(rows)};
  const dim3 grid(static_cast<unsigned>((rows + kGemvWarps - 1) / kGemvWarps), static_cast<unsigned>(items));
  if constexpr (Type == DType::F32 || Type == DType::F16 || Type == DType::BF16) {
    // Every expert starts a whole number of rows in, so alignment of the first is alignment of all;
    // per-slot inputs are rows of `cols` floats (16-byte multiples when cols is a chunk multiple).
    if (float_chunks_fit(Type, cols, w, x) && (rb % 16) == 0) {
      gemv_float_chunks_kernel<Type><<<grid, kGemvWarps * 32, 0, stream>>>(a);
      check_launch("expert matmul (float weights)");
      return;
    }
  }
  gemv_kernel<Type><<<grid, kGemvWarps * 32, 0, stream>>>(a);
  check_launch("expert matmul (one warp per row)");
}

}  // namespace

void launch_expert_gemv(const float* x, int64_t items, int64_t k, bool per_slot, const int32_t* experts, const void* w,
                        DType type, int64_t n_experts, int64_t rows, int64_t cols, float* y, cudaStream_t stream) {
  if (items <= 0 || rows <= 0) return;
  switch (type) {
    case DType::F32: return launch_expert_typed<DType::F32>(x, items, k, per_slot, experts, w, n_experts, rows, cols, y, stream);
    case DType::F16: return launch_expert_typed<DType::F16>(x, items, k, per_slot, experts, w, n_experts, rows, cols, y, stream);
    case DType::BF16: return launch_expert_typed<DType::BF16>(x, items, k, per_slot, experts, w, n_experts, rows, cols, y, stream);
    case DType::Q8_0: return launch_expert_typed<DType::Q8_0>(x, items, k, per_slot, experts, w, n_experts, rows, cols, y, stream);
    case DType::Q4_0: return launch_expert_typed<DType::Q4_0>(x, items, k, per_slot, experts, w, n_experts, rows, cols, y, stream);
    case DType::Q4_K: return launch_expert_typed<DType::Q4_K>(x, items, k, per_slot, experts, w, n_experts, rows, cols, y, stream);
    default: break;
  }
  throw std::invalid_argument(std::string("CUDA expert matmul: weights of type ") + dtype_name(type) +
                              " must be unpacked to their file layout before upload");
}

void launch_matmul(const float* x, int64_t T, const void* w, DType type, int64_t rows, int64_t cols, float* y,
                   int64_t ldy, cudaStream_t stream) {
  if (T <= 0 || rows <= 0) return;
  switch (type) {
    case DType::F32: return launch_typed<DType::F32>(x, T, w, rows, cols, y, ldy, stream);
    case DType::F16: return launch_typed<DType::F16>(x, T, w, rows, cols, y, ldy, stream);
    case DType::BF16: return launch_typed<DType::BF16>(x, T, w, rows, cols, y, ldy, stream);
    case DType::Q8_0: return launch_typed<DType::Q8_0>(x, T, w, rows, cols, y, ldy, stream);
    case DType::Q4_0: return launch_typed<DType::Q4_0>(x, T, w, rows, cols, y, ldy, stream);
    case DType::Q4_K: return launch_typed<DType::Q4_K>(x, T, w, rows, cols, y, ldy, stream);
    default: break;
  }
  throw std::invalid_argument(std::string("CUDA matmul: weights of type ") + dtype_name(type) +
                              " must be unpacked to their file layout before upload");
}

}  // namespace jetmoe::cuda
