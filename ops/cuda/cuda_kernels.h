// Host-side launchers of the CUDA kernels (ops/cuda/*.cu). All pointers are device pointers; every
// launcher enqueues on `stream` and returns without waiting. Weight types are the file layouts
// (F32, F16, BF16, Q8_0, Q4_0, Q4_K): CudaBackend unpacks the CPU's repacked forms at upload.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/dtype.h"

namespace jetmoe::cuda {

// y[t * ldy + r] = sum_i x[t * cols + i] * W[r, i] for t < T, r < rows; W rows are
// dtype_row_bytes(type, cols) apart. Few tokens: one warp per weight row streams the row once for
// all of them; many: shared-memory tiles of 64 rows x 64 tokens.
void launch_matmul(const float* x, int64_t T, const void* w, DType type, int64_t rows, int64_t cols, float* y,
                   int64_t ldy, cudaStream_t stream);

// x[t, :] = row tokens[t] of table ([V, H] of `type`), widened to float.
void launch_embed(const int32_t* tokens, int64_t T, const void* table, DType type, int64_t H, float* x,
                  cudaStream_t stream);

// y[t] = x[t] / sqrt(mean(x[t]^2) + eps) * gain (the mean of squares in double, as the CPU).
void launch_rms_norm(const float* x, int64_t T, int64_t n, const float* gain, float eps, float* y, cudaStream_t stream);

// Rotate-half RoPE in place on x viewed as [T, n_heads, head_dim] with row stride ld.
void launch_rope(float* x, int64_t T, int64_t n_heads, int64_t head_dim, int64_t ld, const int32_t* pos, float theta,
                 cudaStream_t stream);

// h[t, i] = silu(z[t, i]) * z[t, F + i].
void launch_silu_mul(const float* z, int64_t T, int64_t F, float* h, cudaStream_t stream);

// Copies n_rows rows of row_bytes bytes: row i of src goes to dst + dst_offset[i] bytes (the KV
// cache's rows, converted on the host, to their slots).
void launch_scatter_rows(const uint8_t* src, int64_t n_rows, int64_t row_bytes, const int64_t* dst_offset, uint8_t* dst,
                         cudaStream_t stream);

// Causal attention as Backend::attention: q, out [T, slots, kv_heads, d]; K/V rows of (layer, head h)
// start at k_base + k_head_stride * h (rows of k_row_bytes, types k_type / v_type). `scratch`
// holds T * slots * kv_heads * max_keys floats, max_keys >= the most keys any token sees.
struct AttentionArgs {
  const float* q;
  float* out;
  int64_t T, slots, kv_heads, d;
  const int32_t* slot;
  const int32_t* first;  // nullptr: every token sees slots 0 .. slot[t]
  const uint8_t* k_base;
  const uint8_t* v_base;
  int64_t k_head_stride, v_head_stride;  // bytes from one KV head's rows to the next
  int64_t k_row_bytes, v_row_bytes;
  DType k_type, v_type;
  float* scratch;
  int64_t max_keys;
};
void launch_attention(const AttentionArgs& a, cudaStream_t stream);

// Sums `bytes` (a multiple of 16) of device memory with 16-byte loads over the whole GPU, result
// into *sink (keeps the reads from being optimised away): the read-bandwidth probe.
void launch_read_probe(const void* buf, size_t bytes, unsigned long long* sink, cudaStream_t stream);

}  // namespace jetmoe::cuda
