// The default activation memory of runtime/backend.h: host memory (what the CPU backend uses).
#include "runtime/backend.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "runtime/kv_cache.h"

namespace jetmoe {

void* Backend::alloc(size_t bytes) {
  const size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;  // aligned_alloc wants a multiple
  void* p = std::aligned_alloc(64, rounded);
  if (!p) throw std::bad_alloc();
  return p;
}

void Backend::release(void* p) { std::free(p); }

void Backend::copy_to_backend(void* dst, const void* host, size_t bytes) {
  if (bytes) std::memcpy(dst, host, bytes);
}

void Backend::copy_to_host(void* host, const void* src, size_t bytes) {
  if (bytes) std::memcpy(host, src, bytes);
}

void Backend::norm_route(const float* x, int64_t T, int64_t n, const float* gain, float eps, const WeightView& router,
                         int64_t k, float* a, float* logits, int32_t* experts, float* gates) {
  rms_norm(x, T, n, gain, eps, a);
  matmul(a, T, router, logits, router.rows());
  route_topk(logits, T, router.rows(), k, experts, gates);
}

void Backend::expert_mlp(const float* x, int64_t T, int64_t k, const int32_t* experts, const WeightView& w_in,
                         const WeightView& w_out, float* z, float* h, float* y) {
  expert_matmul(x, T, k, false, experts, w_in, z, nullptr);
  silu_mul(z, T * k, w_out.shape.back(), h);
  expert_matmul(h, T, k, true, experts, w_out, y, nullptr);
}

void Backend::combine_norm_route(const float* y, float* gates, const float* bias, float* x, int64_t T, int64_t n,
                                 const float* gain, float eps, const WeightView& router, int64_t k, float* a,
                                 float* logits, int32_t* experts) {
  combine_experts(y, gates, T, k, n, bias, x);
  norm_route(x, T, n, gain, eps, router, k, a, logits, experts, gates);
}

void Backend::rope_store(float* kv, int64_t ld_kv, float* q, int64_t q_heads, int64_t ld_q, int64_t T,
                         const int32_t* pos, float theta, KvCache& cache, int layer, const int32_t* slot) {
  const int64_t nkv = cache.kv_heads(), d = cache.head_dim();
  rope(kv, T, nkv, d, ld_kv, pos, theta);
  kv_store(cache, layer, kv, kv + nkv * d, ld_kv, T, slot);
  rope(q, T, q_heads, d, ld_q, pos, theta);
}

}  // namespace jetmoe
