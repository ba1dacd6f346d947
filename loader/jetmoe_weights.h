// The typed weights of a JetMoE model. One list (for_each_tensor) names every tensor with its role
// and expected shape; binding from a file, quantizing, inspecting and (later) uploading to a device
// all walk that list, so a tensor cannot be handled in one place and forgotten in another.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "loader/tensor_source.h"
#include "runtime/dtype.h"
#include "runtime/jetmoe_config.h"

namespace jetmoe {

// What a tensor does: quantization mixes choose a type per role.
enum class TensorRole { Embedding, Head, Norm, Bias, Router, KvProj, AttnQ, AttnO, MlpIn, MlpOut };
const char* tensor_role_name(TensorRole r);

// A non-owning view of a weight tensor in file (or owned) memory.
struct WeightView {
  std::string name;
  const void* data = nullptr;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;  // PyTorch order: [out, in] or [experts, out, in] or [n]

  bool empty() const { return data == nullptr; }
  int64_t cols() const { return shape.back(); }                          // input size
  int64_t rows() const { return shape.size() >= 2 ? shape[shape.size() - 2] : 1; }  // output size
  int64_t numel() const;
  size_t row_bytes() const { return dtype_row_bytes(dtype, static_cast<size_t>(cols())); }
  size_t nbytes() const;
  // Expert e of a [E, out, in] tensor, as an [out, in] matrix.
  WeightView expert(int64_t e) const;
  // Rows [r0, r0+n) of a matrix.
  WeightView row_slice(int64_t r0, int64_t n) const;
};

struct MoaWeights {
  WeightView kv_proj;     // [2*kv_width, H]: K rows then V rows, shared by all attention experts
  WeightView router;      // [E, H]
  WeightView q_experts;   // [E, kv_width, H]  (input_linear)
  WeightView o_experts;   // [E, H, kv_width]  (output_linear)
  WeightView bias;        // [H]
};

struct MoeWeights {
  WeightView router;      // [E, H]
  WeightView w_in;        // [E, 2F, H]: gate rows then up rows
  WeightView w_out;       // [E, H, F]
  WeightView bias;        // [H]
};

struct LayerWeights {
  WeightView input_norm;      // [H]
  WeightView post_attn_norm;  // [H]
  MoaWeights moa;
  MoeWeights moe;
};

struct JetMoeWeights {
  WeightView embed;       // [V, H]
  WeightView final_norm;  // [H]
  WeightView lm_head;     // [V, H]; aliases embed when tied
  bool tied_head = true;
  std::vector<LayerWeights> layers;

  // Calls f(view, role, expected_shape) for every tensor, in file order. For a tied head the
  // lm_head is not listed (it is the embedding).
  using TensorFn = std::function<void(WeightView&, TensorRole, const std::vector<int64_t>&)>;
  void for_each_tensor(const JetMoeConfig& cfg, const TensorFn& f);
};

// The weights of a model of this config with every view named (Hugging Face layout) and nothing
// bound yet: what bind_weights and the synthetic model (loader/synthetic_model.h) fill.
JetMoeWeights named_weights(const JetMoeConfig& cfg);

// Fills every view from `src` by name, checking shapes (LoadError naming the tensor, expected and
// actual shape) and that a missing tensor is reported by name. The expert biases may be absent
// (the reference initialises them to zero): they are then left empty.
JetMoeWeights bind_weights(const JetMoeConfig& cfg, const TensorSource& src);

// The tensor names of the Hugging Face layout.
std::string layer_tensor_name(int layer, const char* suffix);

}  // namespace jetmoe
