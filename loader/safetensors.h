// Safetensors checkpoints: one `model.safetensors`, or shards listed by
// `model.safetensors.index.json`. Headers are parsed with nlohmann-json and validated before any
// tensor is touched; every problem is a LoadError naming the file and tensor.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "loader/mapped_file.h"
#include "loader/tensor_source.h"

namespace jetmoe {

// One .safetensors file. Validates: the 8-byte header length (against the file size), the JSON
// header (an object of {dtype, shape, data_offsets} entries plus optional __metadata__), known
// dtypes (F32, F16, BF16; others are a LoadError naming the tensor and dtype), shape entries
// non-negative and their product times the element size equal to end-begin, offsets within the
// data section, no two tensors overlapping.
class SafetensorsFile {
 public:
  static std::unique_ptr<SafetensorsFile> open(const std::string& path, LoadMode mode = LoadMode::Mmap);
  // Parses a file already in memory (used by the fuzz target and tests). `path` names it in errors.
  // The bytes must outlive the returned object.
  static std::unique_ptr<SafetensorsFile> parse(const uint8_t* bytes, size_t size, const std::string& path);

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(const std::string& name) const;
  const std::string& path() const { return path_; }
  size_t size() const { return size_; }

 private:
  std::string path_;
  size_t size_ = 0;
  std::shared_ptr<MappedFile> file_;   // null when parse() was given external bytes
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
};

// A checkpoint folder (or a single .safetensors file path). With an index, every shard named in
// its weight_map is opened, every tensor is looked for in the shard the index names, and a tensor
// the index names but the shard lacks (or a shard file missing) is a LoadError.
class SafetensorsCheckpoint : public TensorSource {
 public:
  static std::unique_ptr<SafetensorsCheckpoint> open(const std::string& path, LoadMode mode = LoadMode::Mmap);

  const TensorInfo* find(const std::string& name) const override;
  std::vector<const TensorInfo*> tensors() const override;
  std::string description() const override { return path_; }
  size_t file_bytes() const override;

 private:
  std::string path_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorInfo*> by_name_;
  std::vector<const TensorInfo*> order_;
};

}  // namespace jetmoe
