// Keys (after RoPE) and values of every processed token, per layer, in the layout attention
// reads sequentially: [layer][kv_head][position][head_dim], float32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace jetmoe {

class KvCache {
 public:
  KvCache(int layers, int kv_heads, int head_dim, int capacity);

  int layers() const { return layers_; }
  int kv_heads() const { return kv_heads_; }
  int head_dim() const { return head_dim_; }
  int capacity() const { return capacity_; }
  // Number of positions filled (the next token's position).
  int size() const { return size_; }
  void set_size(int n);  // after a forward pass, or to roll back (n <= size)
  void clear() { size_ = 0; }
  size_t bytes() const { return k_.size() * sizeof(float) * 2; }

  float* k(int layer, int head) { return k_.data() + offset(layer, head); }
  float* v(int layer, int head) { return v_.data() + offset(layer, head); }
  const float* k(int layer, int head) const { return k_.data() + offset(layer, head); }
  const float* v(int layer, int head) const { return v_.data() + offset(layer, head); }

 private:
  size_t offset(int layer, int head) const {
    return (static_cast<size_t>(layer) * kv_heads_ + head) * static_cast<size_t>(capacity_) * head_dim_;
  }
  int layers_, kv_heads_, head_dim_, capacity_;
  int size_ = 0;
  std::vector<float> k_, v_;
};

}  // namespace jetmoe
