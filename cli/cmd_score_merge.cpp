// jetmoe score-merge: combine the JSONL outputs of `jetmoe score --num-shards N` runs into one
// file in record order, with one corpus summary (NLL and token counts summed, never perplexities
// averaged).
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/atomic_file.h"
#include "cli/common_options.h"

namespace jetmoe::cli {
namespace {

struct MergeOptions {
  std::vector<std::string> inputs;
  std::string output, summary;
};

void run_merge(const MergeOptions& o) {
  std::map<int64_t, std::string> by_index;
  int64_t tokens = 0, scored = 0, skipped = 0;
  double sum_lp = 0;
  bool pairs = false;
  for (const std::string& f : o.inputs) {
    std::ifstream in(f, std::ios::binary);
    if (!in) throw std::runtime_error(f + ": cannot open for reading");
    std::string line;
    int64_t line_no = 0;
    while (std::getline(in, line)) {
      ++line_no;
      if (line.empty()) continue;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        throw std::runtime_error(f + ":" + std::to_string(line_no) + ": not a score record: " + e.what());
      }
      if (!j.is_object() || !j.contains("index") || !j["index"].is_number_integer())
        throw std::runtime_error(f + ":" + std::to_string(line_no) + ": record has no integer 'index' (not jetmoe score output?)");
      const int64_t idx = j["index"].get<int64_t>();
      if (!by_index.emplace(idx, line).second)
        throw std::runtime_error(f + ":" + std::to_string(line_no) + ": record index " + std::to_string(idx) +
                                 " appears twice (the same shard merged twice?)");
      if (j.value("skipped", false)) {
        ++skipped;
        continue;
      }
      ++scored;
      tokens += j.value("n_tokens", int64_t{0});
      if (j.contains("logprob")) pairs = true;
      sum_lp += j.contains("logprob") ? j["logprob"].get<double>() : j.value("sum_logprob", 0.0);
    }
  }
  // Gaps mean a shard is missing or incomplete: say so rather than silently merging a part.
  int64_t expect = 0;
  std::vector<int64_t> missing;
  for (const auto& [idx, _] : by_index) {
    while (expect < idx && missing.size() < 5) missing.push_back(expect++);
    expect = idx + 1;
  }
  if (!missing.empty()) {
    std::string m;
    for (int64_t i : missing) m += (m.empty() ? "" : ", ") + std::to_string(i);
    throw std::runtime_error("records are missing from the inputs (first missing indices: " + m +
                             "); is a shard missing or unfinished?");
  }
  std::string body;
  for (const auto& [_, line] : by_index) body += line + "\n";
  if (o.output.empty()) {
    std::fwrite(body.data(), 1, body.size(), stdout);
  } else {
    write_file_atomic(o.output, body);
  }
  nlohmann::ordered_json s;
  s["records"] = static_cast<int64_t>(by_index.size());
  s["scored"] = scored;
  s["skipped"] = skipped;
  s["n_tokens"] = tokens;
  s["sum_logprob"] = sum_lp;
  s["mean_nll"] = tokens ? -sum_lp / static_cast<double>(tokens) : 0.0;
  s["perplexity"] = tokens ? std::exp(-sum_lp / static_cast<double>(tokens)) : 0.0;
  s["mode"] = pairs ? "pairs" : "documents";
  s["inputs"] = o.inputs;
  std::fprintf(stderr, "merged %zu records from %zu files: %lld tokens, corpus perplexity %.4f\n", by_index.size(),
               o.inputs.size(), static_cast<long long>(tokens), s["perplexity"].get<double>());
  if (!o.summary.empty()) write_file_atomic(o.summary, s.dump(2) + "\n");
}

}  // namespace

void add_score_merge_command(CLI::App& app) {
  auto o = std::make_shared<MergeOptions>();
  CLI::App* sub = app.add_subcommand("score-merge", "Merge the JSONL outputs of sharded `jetmoe score` runs, with one corpus summary");
  sub->add_option("inputs", o->inputs, "Shard output files")->required()->check(CLI::ExistingFile);
  sub->add_option("-o,--output", o->output, "Merged JSONL (written atomically; default: stdout)");
  sub->add_option("--summary", o->summary, "Write the corpus summary as JSON to this file");
  sub->callback([o] { run_merge(*o); });
}

}  // namespace jetmoe::cli
