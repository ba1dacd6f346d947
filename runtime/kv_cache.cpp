#include "runtime/kv_cache.h"

#include <stdexcept>
#include <string>

namespace jetmoe {

KvCache::KvCache(int layers, int kv_heads, int head_dim, int capacity)
    : layers_(layers), kv_heads_(kv_heads), head_dim_(head_dim), capacity_(capacity) {
  if (layers <= 0 || kv_heads <= 0 || head_dim <= 0 || capacity <= 0)
    throw std::invalid_argument("KvCache: sizes must be positive");
  const size_t n = static_cast<size_t>(layers) * kv_heads * static_cast<size_t>(capacity) * head_dim;
  k_.assign(n, 0.0f);
  v_.assign(n, 0.0f);
}

void KvCache::set_size(int n) {
  if (n < 0 || n > capacity_)
    throw std::out_of_range("KvCache: size " + std::to_string(n) + " outside 0.." + std::to_string(capacity_));
  size_ = n;
}

}  // namespace jetmoe
