// jetmoe tokenize: the checkpoint tokenizer's ids and pieces for a text (no BOS).
#include <cstdio>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/common_options.h"

namespace jetmoe::cli {
namespace {

struct TokenizeOptions {
  std::string model, prompt, file;
  std::string format = "text";
};

void run_tokenize(const TokenizeOptions& o) {
  if (!o.prompt.empty() && !o.file.empty()) throw CLI::ValidationError("-p/-f", "give only one of -p and -f");
  // Only the tokenizer is needed: load the checkpoint's config and tokenizer files, not the weights.
  const auto files = load_model_files(o.model.empty() ? default_model_path() : o.model);
  const Tokenizer& tok = files->require_tokenizer();
  const std::string text = o.file.empty() ? o.prompt : read_text_file(o.file);
  const std::vector<int32_t> ids = tok.encode(text);
  std::vector<std::string> pieces;
  for (int32_t id : ids) pieces.push_back(tok.piece(id));
  if (o.format == "json") {
    nlohmann::ordered_json j;
    j["ids"] = ids;
    j["pieces"] = pieces;
    std::cout << j.dump() << "\n";
    return;
  }
  for (size_t i = 0; i < ids.size(); ++i) std::printf("%8d  %s\n", ids[i], pieces[i].c_str());
}

}  // namespace

void add_tokenize_command(CLI::App& app) {
  auto o = std::make_shared<TokenizeOptions>();
  CLI::App* sub = app.add_subcommand("tokenize", "Token ids and pieces of a text, with the model's own tokenizer");
  sub->add_option("-m,--model", o->model, "Model folder (default: the bundled models/austen-jetmoe)")->envname("JETMOE_MODEL");
  sub->add_option("-p,--prompt", o->prompt, "Text to tokenize");
  sub->add_option("-f,--file", o->file, "Tokenize a file ('-' for stdin)");
  sub->add_option("--format", o->format, "Output format")->check(CLI::IsMember({"text", "json"}));
  sub->callback([o] { run_tokenize(*o); });
}

}  // namespace jetmoe::cli
