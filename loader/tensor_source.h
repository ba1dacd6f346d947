// A named collection of tensors backed by file memory (safetensors checkpoints, GGUF files).
// The weights struct is filled from any TensorSource by name.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/dtype.h"

namespace jetmoe {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;   // row-major, outermost first (PyTorch order)
  const uint8_t* data = nullptr;  // points into the file's memory; valid while the source lives
  size_t nbytes = 0;
  std::string file;              // the file it came from, for error messages

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

// "[8, 2048, 2048]"
std::string shape_to_string(const std::vector<int64_t>& shape);

// Rearranges tensor t in place into the layout the active CPU kernels stream fastest
// (cpu_memory_type in quant/repack.h); `bytes` is t's data, writable. Returns whether it changed.
bool repack_tensor_for_cpu(TensorInfo& t, uint8_t* bytes);

class TensorSource {
 public:
  virtual ~TensorSource() = default;
  // nullptr when absent.
  virtual const TensorInfo* find(const std::string& name) const = 0;
  // Every tensor, in file order.
  virtual std::vector<const TensorInfo*> tensors() const = 0;
  // Where the tensors come from (a folder or file), for messages.
  virtual std::string description() const = 0;
  // Total bytes of the files backing the tensors.
  virtual size_t file_bytes() const = 0;
};

}  // namespace jetmoe
