// GGUF v2/v3 files (the llama.cpp/ggml container): typed metadata plus tensors in ggml block types.
// Every count, length and offset is checked against the bytes that remain before it is used, so a
// forged header cannot cause a huge allocation or a read past the end; problems are LoadErrors
// naming the file and the key or tensor.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "loader/mapped_file.h"
#include "loader/tensor_source.h"

namespace jetmoe {

enum class GgufType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* gguf_type_name(GgufType t);

// ggml tensor type ids of the block types this runtime reads and writes.
uint32_t ggml_type_of(DType t);

struct GgufValue {
  GgufType type = GgufType::UINT8;
  GgufType elem_type = GgufType::UINT8;  // for ARRAY
  // Scalars: integers widened to int64/uint64, floats to double. Arrays of numbers likewise.
  std::variant<int64_t, uint64_t, double, bool, std::string, std::vector<int64_t>, std::vector<double>,
               std::vector<std::string>, std::vector<uint8_t>>
      v;
};

class GgufFile : public TensorSource {
 public:
  static std::unique_ptr<GgufFile> open(const std::string& path, LoadMode mode = LoadMode::Mmap);
  // Parses bytes already in memory (fuzzing, tests); they must outlive the object.
  static std::unique_ptr<GgufFile> parse(const uint8_t* data, size_t size, const std::string& path);

  uint32_t version() const { return version_; }
  const std::map<std::string, GgufValue>& metadata() const { return kv_; }
  bool has(const std::string& key) const { return kv_.count(key) != 0; }
  // Typed getters: LoadError naming the key when it is missing or of another type.
  uint64_t get_uint(const std::string& key) const;
  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  const std::string& get_string(const std::string& key) const;
  const std::vector<std::string>& get_string_array(const std::string& key) const;
  const std::vector<uint8_t>& get_bytes(const std::string& key) const;

  // When the file was read into RAM (LoadMode::Read), rearranges its Q8_0 / Q4_0 tensors in place
  // into the layout the active CPU kernels stream fastest (quant/repack.h) and returns how many it
  // changed; mapped files are left as they are (0).
  int repack_for_cpu();

  const TensorInfo* find(const std::string& name) const override;
  std::vector<const TensorInfo*> tensors() const override;
  std::string description() const override { return path_; }
  size_t file_bytes() const override { return size_; }

 private:
  const GgufValue& get(const std::string& key, GgufType want) const;
  std::string path_;
  size_t size_ = 0;
  uint32_t version_ = 0;
  std::shared_ptr<MappedFile> file_;
  std::map<std::string, GgufValue> kv_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
};

}  // namespace jetmoe
