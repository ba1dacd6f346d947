// Keys (after RoPE) and values of every processed token, per layer, in the layout attention
// reads sequentially: [layer][kv_head][position] rows of head_dim elements.
//
// Rows are stored as F32 (the default: exact), F16 or BF16 (half the bytes), or Q8_0 (32-element
// int8 blocks with an fp16 scale: 34 bytes per 32 values, 3.8x less than F32), chosen separately
// for keys and values like llama.cpp's -ctk / -ctv. At long contexts the cache is read once per
// decoded token for every layer, as many bytes as the int4 expert weights at 4096 tokens in F32,
// so a smaller cache is faster as well as smaller. The memory is in 2 MiB huge pages; the first
// token touches every (layer, head) region, so the whole capacity is resident from then on
// (choose -c and the type accordingly: `jetmoe inspect` prints the size). On the CPU backend it is
// made resident from the start, in the background (populate_in_background).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "loader/aligned_buffer.h"
#include "runtime/dtype.h"

namespace jetmoe {

// Storage types of the cache's keys and values.
struct KvCacheTypes {
  DType k = DType::F32;
  DType v = DType::F32;
};

// "f32", "f16", "bf16", "q8_0" (the names of --cache-type-k/-v); throws std::invalid_argument
// naming `flag` and the accepted names otherwise.
DType parse_kv_cache_type(const std::string& name, const std::string& flag);
// The accepted names, for --help and CLI::IsMember.
std::vector<std::string> kv_cache_type_names();
// Throws std::invalid_argument unless t can store rows of head_dim elements (Q8_0 needs a
// multiple of 32), naming `what` (e.g. "--cache-type-k").
void check_kv_cache_type(DType t, int head_dim, const std::string& what);
// Both types as the user chose them, naming --cache-type-k / --cache-type-v in the error.
void check_kv_cache_types(KvCacheTypes types, int head_dim);
// The name parse_kv_cache_type accepts for t ("q8_0" for Q8_0).
std::string kv_cache_type_name(DType t);
// Bytes the cache holds per position: keys and values of every layer and KV head.
size_t kv_cache_bytes_per_token(int layers, int kv_heads, int head_dim, KvCacheTypes types);

class KvCache {
 public:
  KvCache(int layers, int kv_heads, int head_dim, int capacity, KvCacheTypes types = {});

  int layers() const { return layers_; }
  int kv_heads() const { return kv_heads_; }
  int head_dim() const { return head_dim_; }
  int capacity() const { return capacity_; }
  DType k_type() const { return types_.k; }
  DType v_type() const { return types_.v; }
  KvCacheTypes types() const { return types_; }
  size_t k_row_bytes() const { return k_row_bytes_; }
  size_t v_row_bytes() const { return v_row_bytes_; }
  // Number of positions filled (the next token's position).
  int size() const { return size_; }
  void set_size(int n);  // after a forward pass, or to roll back (n <= size)
  void clear() { size_ = 0; }
  // Bytes reserved for the whole capacity (keys and values).
  size_t bytes() const { return k_.size() + v_.size(); }

  // Starts making the keys' and values' memory resident on background threads and returns at
  // once (AlignedBuffer::populate_in_background: how, and when it does nothing). Without it a
  // page is faulted in at its first write, and a new cache's first token, which writes a row of
  // every (layer, head), faulted in the whole cache (up to 1.5 s for JetMoE-8B's 4096 positions
  // in f16 on the Zen 5 test VM); populated while a chat user types, that wait is gone.
  void populate_in_background();
  // Waits until that population is done (a benchmark, so no thread competes with its timing).
  void wait_populated();

  // Row of position 0 of (layer, head); position p is p * k_row_bytes() further.
  uint8_t* k_rows(int layer, int head) { return k_.data() + offset(layer, head) * k_row_bytes_; }
  uint8_t* v_rows(int layer, int head) { return v_.data() + offset(layer, head) * v_row_bytes_; }
  const uint8_t* k_rows(int layer, int head) const { return k_.data() + offset(layer, head) * k_row_bytes_; }
  const uint8_t* v_rows(int layer, int head) const { return v_.data() + offset(layer, head) * v_row_bytes_; }

  // Where a device backend keeps this cache's rows (the CUDA backend: device memory with the
  // layout above), created by its first kv_store and freed with the cache. A cache is filled and
  // read by one backend: the CPU uses the rows above, a device backend only its own copy.
  std::shared_ptr<void>& device_rows() const { return device_rows_; }

 private:
  // Index of the first row of (layer, head).
  size_t offset(int layer, int head) const {
    return (static_cast<size_t>(layer) * kv_heads_ + head) * static_cast<size_t>(capacity_);
  }
  int layers_, kv_heads_, head_dim_, capacity_;
  KvCacheTypes types_;
  size_t k_row_bytes_, v_row_bytes_;
  int size_ = 0;
  AlignedBuffer k_, v_;
  mutable std::shared_ptr<void> device_rows_;  // see device_rows()
};

}  // namespace jetmoe
