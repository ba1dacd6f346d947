// The routed-expert ops on the device: top-k routing, the gather / scatter of prefill's
// per-expert token groups, and the gated sum of each token's experts into the residual. The
// arithmetic follows the CPU backend (ops/cpu/cpu_experts.cpp).
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/cuda_kernels.h"

namespace jetmoe::cuda {
namespace {

unsigned blocks_for(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

__global__ void route_topk_kernel(const float* logits, int64_t T, int64_t E, int64_t k, int32_t* experts, float* gates) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= T) return;
  const float* s = logits + t * E;
  int32_t* sel = experts + t * k;
  for (int64_t j = 0; j < k; ++j) {
    int32_t best = -1;
    for (int32_t e = 0; e < E; ++e) {
      bool taken = false;
      for (int64_t i = 0; i < j; ++i) taken = taken || sel[i] == e;
      if (taken) continue;
      if (best < 0 || s[e] > s[best]) best = e;
    }
    sel[j] = best;
  }
  const float mx = s[sel[0]];
  float sum = 0.0f;
  for (int64_t j = 0; j < k; ++j) sum += expf(s[sel[j]] - mx);
  for (int64_t j = 0; j < k; ++j) gates[t * k + j] = expf(s[sel[j]] - mx) / sum;
}

__global__ void move_rows_kernel(const float* src, const int32_t* rows, int64_t n_rows, int64_t n, float* dst,
                                 bool gather) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_rows * n) return;
  const int64_t r = i / n, c = i % n;
  if (gather)
    dst[i] = src[static_cast<int64_t>(rows[r]) * n + c];
  else
    dst[static_cast<int64_t>(rows[r]) * n + c] = src[i];
}

__global__ void combine_kernel(const float* y, const float* gates, int64_t T, int64_t k, int64_t n, const float* bias,
                               float* x) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= T * n) return;
  const int64_t t = i / n, c = i % n;
  float acc = 0.0f;
  for (int64_t j = 0; j < k; ++j) acc += gates[t * k + j] * y[(t * k + j) * n + c];
  x[i] += acc + bias[c];
}

// One block does a decode step's sublayer start: RMSNorm (as rms_norm_kernel), the E router dot
// products (one warp each, from the normed row in shared memory), then top-k (as route_topk_kernel).
__global__ void norm_route_kernel(const float* x, int64_t n, const float* gain, float eps, const float* router,
                                  int64_t E, int64_t k, float* a, float* logits, int32_t* experts, float* gates) {
  extern __shared__ float a_s[];  // n floats
  __shared__ double partial[32];
  __shared__ float s_logits[32];
  __shared__ float red[32][33];  // [router row][warp]
  double ss = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ss += static_cast<double>(x[i]) * x[i];
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x / 32] = ss;
  __syncthreads();
  if (threadIdx.x == 0) {
    double t = 0.0;
    for (unsigned w = 0; w < blockDim.x / 32; ++w) t += partial[w];
    partial[0] = t;
  }
  __syncthreads();
  const float r = static_cast<float>(1.0 / sqrt(partial[0] / static_cast<double>(n) + eps));
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float v = x[i] * r * gain[i];
    a_s[i] = v;
    a[i] = v;
  }
  __syncthreads();
  // Each router row's dot product over the whole block: per-thread partial sums, per-warp sums in
  // red[e][warp], then warp 0 adds the warps' sums.
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31, nw = blockDim.x / 32;
  for (int64_t e = 0; e < E; ++e) {
    const float* w = router + e * n;
    float dot = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) dot += w[i] * a_s[i];
    for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    if (lane == 0) red[e][warp] = dot;
  }
  __syncthreads();
  if (warp == 0) {
    for (int64_t e = 0; e < E; ++e) {
      float dot = lane < nw ? red[e][lane] : 0.0f;
      for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
      if (lane == 0) {
        s_logits[e] = dot;
        logits[e] = dot;
      }
    }
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  for (int64_t j = 0; j < k; ++j) {
    int32_t best = -1;
    for (int32_t e = 0; e < E; ++e) {
      bool taken = false;
      for (int64_t i = 0; i < j; ++i) taken = taken || experts[i] == e;
      if (taken) continue;
      if (best < 0 || s_logits[e] > s_logits[best]) best = e;
    }
    experts[j] = best;
  }
  const float mx = s_logits[experts[0]];
  float sum = 0.0f;
  for (int64_t j = 0; j < k; ++j) sum += expf(s_logits[experts[j]] - mx);
  for (int64_t j = 0; j < k; ++j) gates[j] = expf(s_logits[experts[j]] - mx) / sum;
}

}  // namespace

bool launch_norm_route(const float* x, int64_t n, const float* gain, float eps, const float* router, int64_t E,
                       int64_t k, float* a, float* logits, int32_t* experts, float* gates, cudaStream_t stream) {
  const size_t smem = sizeof(float) * static_cast<size_t>(n);
  if (E > 32 || k > E || smem > 48 * 1024) return false;
  norm_route_kernel<<<1, 1024, smem, stream>>>(x, n, gain, eps, router, E, k, a, logits, experts, gates);
  check_launch("norm_route");
  return true;
}

void launch_route_topk(const float* logits, int64_t T, int64_t E, int64_t k, int32_t* experts, float* gates,
                       cudaStream_t stream) {
  if (T <= 0) return;
  route_topk_kernel<<<blocks_for(T, 128), 128, 0, stream>>>(logits, T, E, k, experts, gates);
  check_launch("route_topk");
}

void launch_gather_rows(const float* src, const int32_t* rows, int64_t n_rows, int64_t n, float* dst, cudaStream_t stream) {
  if (n_rows * n <= 0) return;
  move_rows_kernel<<<blocks_for(n_rows * n, 256), 256, 0, stream>>>(src, rows, n_rows, n, dst, true);
  check_launch("gather rows");
}

void launch_scatter_rows(const float* src, const int32_t* rows, int64_t n_rows, int64_t n, float* dst, cudaStream_t stream) {
  if (n_rows * n <= 0) return;
  move_rows_kernel<<<blocks_for(n_rows * n, 256), 256, 0, stream>>>(src, rows, n_rows, n, dst, false);
  check_launch("scatter rows");
}

void launch_combine_experts(const float* y, const float* gates, int64_t T, int64_t k, int64_t n, const float* bias,
                            float* x, cudaStream_t stream) {
  if (T * n <= 0) return;
  combine_kernel<<<blocks_for(T * n, 256), 256, 0, stream>>>(y, gates, T, k, n, bias, x);
  check_launch("combine experts");
}

}  // namespace jetmoe::cuda
