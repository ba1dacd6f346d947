// Causal attention over the device-resident KV cache, for decode and prefill alike: one block per
// (token, query head), i.e. per (token, slot, KV head). Scores go to global scratch (any context
// length fits), then softmax and the weighted sum of value rows, each row read in its stored type.
// The arithmetic follows the CPU's decode path: scores = scale * dot(k, q), exponentials of
// (score - max), out = (sum_r p_r v_r) / sum_r p_r.
#include <cmath>

#include "ops/cuda/cuda_check.h"
#include "ops/cuda/cuda_dequant.cuh"
#include "ops/cuda/cuda_kernels.h"

namespace jetmoe::cuda {
namespace {

constexpr int kThreads = 128;

// Reduces v over the block with op; every thread gets the result. `shared` holds one value per warp.
template <typename Op>
__device__ float block_reduce(float v, float* shared, Op op) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x / 32, nw = blockDim.x / 32;
  __syncthreads();  // shared may still be read from the previous reduction
  if ((threadIdx.x & 31) == 0) shared[warp] = v;
  __syncthreads();
  v = shared[0];
  for (int w = 1; w < nw; ++w) v = op(v, shared[w]);
  return v;
}

__global__ void attention_kernel(AttentionArgs a) {
  __shared__ float red[kThreads / 32];
  const int64_t item = blockIdx.x;
  const int64_t h = item % a.kv_heads, t = item / (a.kv_heads * a.slots);
  const int64_t j0 = a.first ? a.first[t] : 0;
  const int64_t n = a.slot[t] + 1 - j0;
  const int64_t head = item * a.d;  // q and out are [T, slots, kv_heads, d]: item-major
  const float* q = a.q + head;
  float* s = a.scratch + item * a.max_keys;
  const uint8_t* K = a.k_base + h * a.k_head_stride + j0 * a.k_row_bytes;
  const uint8_t* V = a.v_base + h * a.v_head_stride + j0 * a.v_row_bytes;
  const float scale = 1.0f / sqrtf(static_cast<float>(a.d));
  const int lane = threadIdx.x & 31, warp = threadIdx.x / 32, nw = blockDim.x / 32;

  float mx = -INFINITY;
  for (int64_t r = warp; r < n; r += nw) {
    const uint8_t* row = K + r * a.k_row_bytes;
    float dot = 0.0f;
    for (int64_t i = lane; i < a.d; i += 32) dot += kv_element(a.k_type, row, static_cast<int>(i)) * q[i];
    for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    dot *= scale;
    if (lane == 0) s[r] = dot;
    mx = fmaxf(mx, dot);
  }
  mx = block_reduce(mx, red, [](float x, float y) { return fmaxf(x, y); });  // also orders the s[] writes
  float sum = 0.0f;
  for (int64_t r = threadIdx.x; r < n; r += blockDim.x) {
    const float e = expf(s[r] - mx);
    s[r] = e;
    sum += e;
  }
  sum = block_reduce(sum, red, [](float x, float y) { return x + y; });
  const float inv = 1.0f / sum;
  for (int64_t i = threadIdx.x; i < a.d; i += blockDim.x) {
    float acc = 0.0f;
    for (int64_t r = 0; r < n; ++r) acc += s[r] * kv_element(a.v_type, V + r * a.v_row_bytes, static_cast<int>(i));
    a.out[head + i] = acc * inv;
  }
}

}  // namespace

void launch_attention(const AttentionArgs& a, cudaStream_t stream) {
  const int64_t items = a.T * a.slots * a.kv_heads;
  if (items <= 0) return;
  attention_kernel<<<static_cast<unsigned>(items), kThreads, 0, stream>>>(a);
  check_launch("attention");
}

}  // namespace jetmoe::cuda
