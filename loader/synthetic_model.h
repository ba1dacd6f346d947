// Random-weight models with a real model's shapes, built directly in memory in any weight type,
// so speed can be measured at JetMoE-8B's shape on any machine without downloading 17 GB.
//
// Every tensor is generated a chunk of rows at a time and converted/quantized at once: a whole
// float copy of a quantized tensor never exists (the largest float buffer is one chunk per thread).
// The values depend only on (seed, tensor, row), never on the thread count, so the same seed gives
// the same float weights in every type (the q8_0 model is the quantized f32 model).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "loader/model_files.h"
#include "runtime/jetmoe_config.h"

namespace jetmoe {

// JetMoE-8B's hyper-parameters (vocab 32000, hidden 2048, 16 KV heads x 128, 8 experts top-2 in
// both sublayers, MLP width 5632, 24 layers), with `layers` of them (full width).
JetMoeConfig jetmoe_8b_config(int layers = 24);

// Weight types a synthetic model can be built in: the float types "f32", "bf16", "f16" (every
// matrix in that type), and the quantization mixes of loader/quantize_weights.h ("q8_0", "q4_0",
// "q4_k", ...; routers, norms and biases stay f32 as in those mixes).
std::vector<std::string> synthetic_type_names();

// Builds the model in memory (MemoryTensorSource) and binds its weights: the result works with
// JetMoeModel and ModelFiles::bytes_per_token() like a loaded checkpoint (no tokenizer). Weights
// are uniform with standard deviation 0.02 (the reference initializer range), norm gains 1,
// biases 0. Quantization uses plain max-abs rounding (the error-minimising search would only slow
// the build of weights whose values do not matter). Parallel over rows with OpenMP.
// Quantized weights are repacked for this CPU's kernels (quant/repack.h) unless gguf_layout is
// true: then they stay in the GGUF block layout, the one a mmapped .gguf file runs (to benchmark
// those kernels at the full shape without a file).
// Throws std::invalid_argument for an unknown type or a row length no block type divides.
std::unique_ptr<ModelFiles> make_synthetic_model(const JetMoeConfig& cfg, const std::string& type,
                                                 uint64_t seed = 1, bool gguf_layout = false);

// Bytes make_synthetic_model(cfg, type) will allocate (to refuse a model that cannot fit in RAM
// before building it).
size_t synthetic_model_bytes(const JetMoeConfig& cfg, const std::string& type);

}  // namespace jetmoe
