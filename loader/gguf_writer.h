// Writes GGUF v3 files: metadata, then tensor infos, then 32-byte-aligned tensor data. The file
// appears at its path complete or not at all (written beside it, synced, renamed).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/dtype.h"

namespace jetmoe {

class GgufWriter {
 public:
  void add_u32(const std::string& key, uint32_t v);
  void add_i32(const std::string& key, int32_t v);
  void add_u64(const std::string& key, uint64_t v);
  void add_f32(const std::string& key, float v);
  void add_bool(const std::string& key, bool v);
  void add_string(const std::string& key, const std::string& v);
  void add_string_array(const std::string& key, const std::vector<std::string>& v);
  void add_f32_array(const std::string& key, const std::vector<float>& v);
  void add_i32_array(const std::string& key, const std::vector<int32_t>& v);
  void add_u8_array(const std::string& key, const std::vector<uint8_t>& v);
  // shape in PyTorch order (outermost first); data must stay valid until write().
  void add_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape, const void* data, size_t nbytes);

  // Throws LoadError naming the path on failure, leaving no file behind.
  void write(const std::string& path) const;

  static constexpr uint32_t kAlignment = 32;

 private:
  struct Tensor {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    const void* data;
    size_t nbytes;
  };
  void key(const std::string& k, uint32_t type);
  std::vector<uint8_t> kv_;  // serialized key/value pairs
  uint64_t n_kv_ = 0;
  std::vector<Tensor> tensors_;
};

}  // namespace jetmoe
