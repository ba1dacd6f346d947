// Quantization mixes: which block type each tensor role gets, and quantizing a model's weights
// into owned memory (the `--quant TYPE` load-time path and `jetmoe quantize`).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "loader/jetmoe_weights.h"
#include "loader/memory_tensor_source.h"

namespace jetmoe {

// Routers, norms and biases always stay float (expert choice is the MoE failure mode; they are
// ~0.01% of the weights). The other roles follow the mix.
struct QuantMix {
  std::string name;
  DType experts = DType::Q8_0;     // attention and MLP expert matrices
  DType kv_proj = DType::Q8_0;     // the shared K/V projection (read by every token)
  DType embed_head = DType::Q8_0;  // token embedding and output head
};

// "q8_0", "q4_0", "q4_k" (int4 experts; kv_proj, embedding and head stay 8-bit), and the "pure"
// variants "q4_0-pure", "q4_k-pure" (every matrix in the 4-bit type). Throws std::invalid_argument
// listing the known names.
QuantMix quant_mix(const std::string& name);
std::vector<std::string> quant_mix_names();

// The type rows of `cols` elements get when `want` is asked for: `want` when its block divides the
// row (or it is not a block type), else the next type down that does, Q4_K -> Q4_0 -> Q8_0 -> F32
// (a fallback is never less precise than the type asked for).
DType fit_quant_type(DType want, int64_t cols);

struct QuantizeReport {
  size_t float_bytes = 0, quantized_bytes = 0;
  std::vector<std::string> fallbacks;  // tensors whose rows do not divide the block: next type down
};

// Quantizes every matrix of `w` per `mix` into a new source (small tensors copied as they are).
// A row length that the chosen block size does not divide falls back Q4_K -> Q4_0 -> Q8_0 -> F32
// and is listed in the report; with `strict` it is an std::invalid_argument naming the tensor.
std::unique_ptr<MemoryTensorSource> quantize_weights(const JetMoeConfig& cfg, JetMoeWeights w, const QuantMix& mix,
                                                     QuantizeReport* report = nullptr, bool strict = false);

}  // namespace jetmoe
