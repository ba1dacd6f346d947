// JetMoE models as GGUF files: what `jetmoe quantize` writes and `-m FILE.gguf` reads.
//
// Metadata: general.architecture = "jetmoe", the hyper-parameters under "jetmoe.*" (llama.cpp's
// key names where one exists), the tokenizer both in GGUF's generic form (tokenizer.ggml.tokens /
// scores / token_type, so generic readers can list it) and as the exact SentencePiece model bytes
// (jetmoe.tokenizer.sentencepiece, which this runtime loads), and tokenizer.chat_template.
// Tensors keep their Hugging Face names and are stored in the standard ggml block types.
#pragma once

#include <memory>
#include <string>

#include "loader/model_files.h"

namespace jetmoe {

class GgufFile;

// Writes the model's current weights (quantized or not) and everything needed to run it.
void write_gguf_model(const ModelFiles& m, const std::string& path, const std::string& quant_name);

// Fills `m` (config, tokenizer, tokenizer_config, weights) from an opened GGUF file.
void read_gguf_model(std::unique_ptr<GgufFile> file, ModelFiles& m);

}  // namespace jetmoe
