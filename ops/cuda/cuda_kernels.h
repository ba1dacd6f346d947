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

// Keys and values of T tokens into one layer of the KV cache: row (h, pos[t]) of K gets
// k[t * ld + h * d ..] converted to k_type (F32, F16/BF16 rounded to nearest even, Q8_0 with the
// max-abs scale exactly as the CPU's kv_store_row), likewise V. k_layer / v_layer: the layer's
// first row; heads are head_stride bytes apart.
struct KvStoreArgs {
  const float *k, *v;
  int64_t ld, T, kv_heads, d;
  const int32_t* pos;
  uint8_t *k_layer, *v_layer;
  int64_t k_head_stride, v_head_stride, k_row_bytes, v_row_bytes;
  DType k_type, v_type;
};
void launch_kv_store(const KvStoreArgs& a, cudaStream_t stream);

// Backend::rope_store in one launch: RoPE (as launch_rope) on the kv_heads key heads of each row of
// kv_rows (row stride kv.ld; kv.k / kv.v point at the key and value parts of the same rows) and on
// q_heads query heads of q (row stride ld_q), then keys and values into the cache as launch_kv_store
// (kv.pos: the cache slots); rope_pos are the RoPE positions.
struct RopeStoreArgs {
  KvStoreArgs kv;
  float* kv_rows;
  float* q;
  int64_t q_heads, ld_q;
  const int32_t* rope_pos;
  float theta;
};
void launch_rope_store(const RopeStoreArgs& a, cudaStream_t stream);

// ---- routed experts (ops/cuda/cuda_experts.cu) ----
// Backend::route_topk on the device: one thread per token.
void launch_route_topk(const float* logits, int64_t T, int64_t E, int64_t k, int32_t* experts, float* gates,
                       cudaStream_t stream);
// Backend::norm_route for one token in one launch (router: [E, n] float32). Returns false, doing
// nothing, when the shape does not fit it (E > 32 or n too long for shared memory).
bool launch_norm_route(const float* x, int64_t n, const float* gain, float eps, const float* router, int64_t E,
                       int64_t k, float* a, float* logits, int32_t* experts, float* gates, cudaStream_t stream);
// Few items: y[i] = W[experts[i]] x_i for items i < items (x_i = x row i if per_slot, else i / k),
// one warp per weight row, the expert ids read on the device (no host round trip).
void launch_expert_gemv(const float* x, int64_t items, int64_t k, bool per_slot, const int32_t* experts, const void* w,
                        DType type, int64_t n_experts, int64_t rows, int64_t cols, float* y, cudaStream_t stream);
// dst row r = src row rows[r] (gather), or dst row rows[r] = src row r (scatter); rows of n floats.
void launch_gather_rows(const float* src, const int32_t* rows, int64_t n_rows, int64_t n, float* dst, cudaStream_t stream);
void launch_scatter_rows(const float* src, const int32_t* rows, int64_t n_rows, int64_t n, float* dst, cudaStream_t stream);
// Backend::combine_experts: x[t, :] += bias + sum_j gates[t*k+j] * y[t*k+j, :].
void launch_combine_experts(const float* y, const float* gates, int64_t T, int64_t k, int64_t n, const float* bias,
                            float* x, cudaStream_t stream);

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
