// Everything read from a model path: a Hugging Face checkpoint folder (config.json,
// generation_config.json, safetensors, tokenizer.model, tokenizer_config.json).
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "loader/hf_config.h"
#include "loader/jetmoe_weights.h"
#include "loader/mapped_file.h"
#include "loader/tensor_source.h"
#include "runtime/jetmoe_config.h"
#include "runtime/tokenizer.h"

namespace jetmoe {

struct LoadOptions {
  LoadMode mode = LoadMode::Mmap;
  std::string quant;  // non-empty: quantize the weights at load time with this mix (loader/quantize_weights.h)
};

struct ModelFiles {
  std::string path;
  JetMoeConfig config;
  GenerationConfig generation;
  nlohmann::json tokenizer_config;        // {} when the file is absent
  std::unique_ptr<TensorSource> tensors;  // owns the memory the weights point into (the quantized copy with --quant)
  std::unique_ptr<TensorSource> file_tensors;  // with --quant: the mapped files it was made from
  JetMoeWeights weights;
  std::unique_ptr<Tokenizer> tokenizer;   // null when the checkpoint has no tokenizer.model

  // The tokenizer, or a LoadError saying the checkpoint has none (commands that take text need it).
  const Tokenizer& require_tokenizer() const;
  // Bytes of weights read for one decoded token: the selected experts, the shared parts, the head.
  size_t bytes_per_token() const;
};

// Loads a checkpoint folder. Every problem is a LoadError naming the file and field/tensor.
std::unique_ptr<ModelFiles> load_model_files(const std::string& path, const LoadOptions& opts = {});

// The bundled default model (models/austen-jetmoe): $JETMOE_MODEL if set, else found beside the
// executable (../models, ../share/jetmoe/models) or in the source tree.
std::string default_model_path();

}  // namespace jetmoe
