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
  if (t.shape.size() < 2) return false;
  // Rows per matrix (an expert tensor [E, out, in] has `out`): groups of 16 must not straddle two
  // experts.
  const int64_t rows = t.shape[t.shape.size() - 2], cols = t.shape.back();
  const DType want = cpu_memory_type(t.dtype, rows);
  if (want == t.dtype) return false;
  repack_rows(t.dtype, bytes, t.numel() / cols, cols);
  t.dtype = want;
  return true;
}

}  // namespace jetmoe
