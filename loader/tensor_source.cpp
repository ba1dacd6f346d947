#include "loader/tensor_source.h"

#include "quant/repack.h"

namespace jetmoe {

std::string shape_to_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

bool repack_tensor_for_cpu(TensorInfo& t, uint8_t* bytes) {
  const DType want = cpu_memory_type(t.dtype);
  if (want == t.dtype || t.shape.empty()) return false;
  const int64_t cols = t.shape.back();
  repack_rows(t.dtype, bytes, t.numel() / cols, cols);
  t.dtype = want;
  return true;
}

}  // namespace jetmoe
