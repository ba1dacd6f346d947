// jetmoe generate: continue a prompt, streaming text to stdout as it is produced.
#include <cstdio>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/common_options.h"
#include "runtime/generator.h"
#include "runtime/sampler.h"

namespace jetmoe::cli {
namespace {

struct GenerateOptions {
  ModelOptions model;
  std::string prompt, prompt_file, prompt_ids;
  int n_predict = 128;
  SamplingParams sampling;
  long long seed = -1;
  bool ignore_eos = false;
  std::string format = "text";
};

void run_generate(GenerateOptions& o) {
  LoadedModel lm = load_model(o.model);
  const ModelFiles& files = *lm.files;

  std::vector<int32_t> prompt;
  const int given = !o.prompt.empty() + !o.prompt_file.empty() + !o.prompt_ids.empty();
  if (given > 1) throw CLI::ValidationError("-p/-f/--prompt-ids", "give only one prompt");
  if (!o.prompt_ids.empty()) {
    prompt = parse_id_list(o.prompt_ids, "--prompt-ids");
  } else {
    const std::string text = !o.prompt_file.empty() ? read_text_file(o.prompt_file) : o.prompt;
    prompt = files.require_tokenizer().encode_prompt(text);
    if (prompt.empty()) throw CLI::ValidationError("-p", "the prompt is empty and the tokenizer adds no BOS");
  }
  if (static_cast<int>(prompt.size()) >= lm.ctx_size)
    throw std::runtime_error("the prompt has " + std::to_string(prompt.size()) + " tokens; the context holds " +
                             std::to_string(lm.ctx_size) + " (use -c to raise it up to the model's " +
                             std::to_string(files.config.max_position_embeddings) + ")");
  for (int32_t id : prompt)
    if (id >= files.config.vocab_size)
      throw CLI::ValidationError("--prompt-ids", "token id " + std::to_string(id) + " is outside the vocabulary 0.." +
                                                     std::to_string(files.config.vocab_size - 1));

  o.sampling.seed = o.seed < 0 ? random_seed() : static_cast<uint64_t>(o.seed);
  Sampler sampler(o.sampling, files.config.vocab_size);
  KvCache cache = lm.model->make_cache(lm.ctx_size);
  GenerateRequest req;
  req.prompt = prompt;
  req.max_new_tokens = o.n_predict;
  req.ignore_eos = o.ignore_eos;
  req.stop_ids = {files.config.eos_token_id};
  for (int id : files.generation.eos_token_ids)
    if (id != files.config.eos_token_id) req.stop_ids.push_back(id);

  const bool json = o.format == "json";
  std::vector<int32_t> generated, history;
  std::unique_ptr<TokenStreamer> streamer;
  if (!json && files.tokenizer) {
    streamer = std::make_unique<TokenStreamer>(*files.tokenizer);
    if (o.prompt_ids.empty()) {  // echo the prompt text, as llama-cli does
      std::fputs(files.tokenizer->decode(std::span<const int32_t>(prompt).subspan(files.tokenizer->add_bos() ? 1 : 0)).c_str(), stdout);
      std::fflush(stdout);
    }
  }
  const GenerationStats st = generate(*lm.model, cache, req, sampler, history, [&](int32_t id) {
    generated.push_back(id);
    if (json) return true;
    if (streamer) {
      std::fputs(streamer->push(id).c_str(), stdout);
    } else {
      std::printf("%d ", id);
    }
    std::fflush(stdout);
    return true;
  });
  if (json) {
    nlohmann::ordered_json j;
    j["prompt_ids"] = prompt;
    j["generated_ids"] = generated;
    if (files.tokenizer) j["text"] = files.tokenizer->decode(generated);
    j["stopped_by_eos"] = st.stopped_by_eos;
    j["timings"] = {{"prompt_tokens", st.prompt_tokens}, {"prompt_seconds", st.prompt_seconds},
                    {"prompt_tokens_per_second", st.prompt_tps()}, {"generated_tokens", st.generated_tokens},
                    {"generate_seconds", st.generate_seconds}, {"generate_tokens_per_second", st.generate_tps()}};
    std::cout << j.dump() << "\n";
  } else {
    if (streamer) std::fputs(streamer->flush().c_str(), stdout);
    std::fputs("\n", stdout);
    std::fflush(stdout);
  }
  std::fprintf(stderr, "\nprompt: %d tokens in %.3f s (%.1f tok/s) | generation: %d tokens in %.3f s (%.1f tok/s)%s\n",
               st.prompt_tokens, st.prompt_seconds, st.prompt_tps(), st.generated_tokens, st.generate_seconds,
               st.generate_tps(), st.context_full ? " | context full" : "");
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto o = std::make_shared<GenerateOptions>();
  CLI::App* sub = app.add_subcommand("generate", "Continue a prompt, streaming the text to stdout");
  o->model.add_to(*sub);
  sub->add_option("-p,--prompt", o->prompt, "Prompt text");
  sub->add_option("-f,--file", o->prompt_file, "Read the prompt from a file ('-' for stdin)");
  sub->add_option("--prompt-ids", o->prompt_ids, "Prompt as comma-separated token ids (no BOS is added)");
  sub->add_option("-n,--n-predict", o->n_predict, "Tokens to generate (-1: until EOS or the context is full)")
      ->check(CLI::Range(-1, 1 << 30));
  add_sampling_options(*sub, o->sampling, false);
  sub->add_option("-s,--seed", o->seed, "Random seed (-1: random)");
  sub->add_flag("--ignore-eos", o->ignore_eos, "Keep generating past the end-of-sequence token");
  sub->add_option("--format", o->format, "Output: streamed text, or one JSON object with generated_ids")
      ->check(CLI::IsMember({"text", "json"}));
  sub->callback([o] { run_generate(*o); });
}

}  // namespace jetmoe::cli
