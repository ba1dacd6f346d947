// Tensors held in owned, writable memory: quantize-at-load results, and test models whose
// weights are edited (e.g. poisoning an expert to prove it is never read).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "loader/aligned_buffer.h"
#include "loader/tensor_source.h"

namespace jetmoe {

class MemoryTensorSource : public TensorSource {
 public:
  explicit MemoryTensorSource(std::string description) : description_(std::move(description)) {}
  // A deep copy of every tensor of `src`.
  static std::unique_ptr<MemoryTensorSource> copy_of(const TensorSource& src);

  // Adds a tensor of `nbytes` zero bytes and returns its writable memory.
  uint8_t* add(const std::string& name, DType dtype, std::vector<int64_t> shape, size_t nbytes);
  uint8_t* mutable_data(const std::string& name);

  // Rearranges every Q8_0 / Q4_0 tensor in place into the layout the active CPU kernels stream
  // fastest (cpu_memory_type in quant/repack.h; a no-op unless the AVX-512 or AVX2 kernels run). Only
  // for weights that are run, never for a source about to be written to a file.
  void repack_for_cpu();

  const TensorInfo* find(const std::string& name) const override;
  std::vector<const TensorInfo*> tensors() const override;
  std::string description() const override { return description_; }
  size_t file_bytes() const override { return bytes_; }

 private:
  struct Entry {
    TensorInfo info;
    AlignedBuffer bytes;
  };
  std::string description_;
  std::vector<std::unique_ptr<Entry>> entries_;
  std::map<std::string, Entry*> by_name_;
  size_t bytes_ = 0;
};

}  // namespace jetmoe
