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

}  // namespace

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
