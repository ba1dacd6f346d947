// jetmoe compare-quants: what each quantization level costs in quality and buys in size and speed,
// in one table. The full-precision model runs once; each level is then loaded (quantized from the
// same files), timed, and compared with it on the same windows of text.
//
// Every level runs in its own child process, so its peak memory is its own and one level's
// allocations do not flatter or burden the next. The parent never starts OpenMP threads (an
// OpenMP runtime does not survive fork), it only tokenizes, forks and collects results.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli/atomic_file.h"
#include "cli/common_options.h"
#include "cli/quant_plot.h"
#include "loader/quantize_weights.h"
#include "runtime/quality_metrics.h"

namespace jetmoe::cli {
namespace {

struct CompareOptions {
  ModelOptions model;
  std::string file;
  std::vector<std::string> types = {"q8_0", "q4_0", "q4_k"};
  int ctx = 256;
  int chunks = 24;
  int decode_tokens = 64;
  bool json = false;
  std::string csv, plot, json_file;
};

long peak_rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  return 0;
}

void reset_peak_rss() { std::ofstream("/proc/self/clear_refs") << "5"; }

// Decode speed: a short prompt, then `n` single-token steps with the KV cache (greedy).
double decode_tps(JetMoeModel& model, const std::vector<int32_t>& prompt, int n) {
  KvCache cache = model.make_cache(static_cast<int>(prompt.size()) + n + 1);
  std::vector<float> logits;
  model.forward(prompt, cache, logits, false);
  const int V = model.config().vocab_size;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) {
    const int32_t id = static_cast<int32_t>(std::max_element(logits.begin(), logits.begin() + V) - logits.begin());
    const int32_t one[1] = {id};
    model.forward(one, cache, logits, false);
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return s > 0 ? n / s : 0;
}

// Writes an EvalRun to a file for the parent (binary, this machine only).
void save_run(const std::string& path, const EvalRun& r) {
  std::ofstream out(path, std::ios::binary);
  auto put = [&](const auto& v) {
    const uint64_t n = v.size();
    out.write(reinterpret_cast<const char*>(&n), 8);
    out.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(n * sizeof(v[0])));
  };
  put(r.logprobs);
  put(r.nll);
  put(r.argmax);
  put(r.experts);
  out.write(reinterpret_cast<const char*>(&r.tokens_per_window), sizeof r.tokens_per_window);
  out.write(reinterpret_cast<const char*>(&r.prefill_seconds), sizeof r.prefill_seconds);
  out.write(reinterpret_cast<const char*>(&r.prefill_tokens), sizeof r.prefill_tokens);
  if (!out) throw std::runtime_error(path + ": write failed (disk full?)");
}

EvalRun load_run(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EvalRun r;
  auto get = [&](auto& v) {
    uint64_t n = 0;
    in.read(reinterpret_cast<char*>(&n), 8);
    v.resize(n);
    in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n * sizeof(v[0])));
  };
  get(r.logprobs);
  get(r.nll);
  get(r.argmax);
  get(r.experts);
  in.read(reinterpret_cast<char*>(&r.tokens_per_window), sizeof r.tokens_per_window);
  in.read(reinterpret_cast<char*>(&r.prefill_seconds), sizeof r.prefill_seconds);
  in.read(reinterpret_cast<char*>(&r.prefill_tokens), sizeof r.prefill_tokens);
  if (!in) throw std::runtime_error(path + ": short read of the reference run");
  return r;
}

// Runs `fn` in a child process; returns the JSON it printed to the pipe, plus its peak RSS.
nlohmann::json in_child(const std::string& what, const std::function<nlohmann::json()>& fn) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    close(fds[0]);
    int rc = 0;
    std::string out;
    try {
      out = fn().dump();
    } catch (const std::exception& e) {
      out = nlohmann::json{{"error", e.what()}}.dump();
      rc = 1;
    }
    size_t done = 0;
    while (done < out.size()) {
      const ssize_t n = write(fds[1], out.data() + done, out.size() - done);
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    close(fds[1]);
    std::fflush(nullptr);
    _exit(rc);
  }
  close(fds[1]);
  std::string text;
  char buf[65536];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (text.empty()) throw std::runtime_error(what + ": the worker process died (signal " +
                                             std::to_string(WIFSIGNALED(status) ? WTERMSIG(status) : 0) + ")");
  nlohmann::json j = nlohmann::json::parse(text);
  if (j.contains("error")) throw std::runtime_error(what + ": " + j["error"].get<std::string>());
  return j;
}

void run_compare(const CompareOptions& o) {
  const std::string path = o.model.resolved_model();
  // Tokenize in the parent: only the tokenizer and config are touched (weights stay unmapped pages).
  const auto files = load_model_files(path, LoadOptions{});
  const Tokenizer& tok = files->require_tokenizer();
  const std::vector<int32_t> tokens = tok.encode(read_text_file(o.file));
  const EvalWindows windows = make_eval_windows(tokens, std::min(o.ctx, files->config.max_position_embeddings),
                                                files->config.bos_token_id, o.chunks);
  const std::vector<int32_t> decode_prompt(windows.windows[0].begin(), windows.windows[0].begin() + std::min(16, windows.ctx));
  const size_t scored = windows.windows.size() * static_cast<size_t>(windows.scored_per_window());
  std::fprintf(stderr, "compare-quants: %s, %zu windows of %d tokens (%zu scored), %d threads\n", o.file.c_str(),
               windows.windows.size(), windows.ctx, scored, o.model.effective_threads());

  const std::string ref_path = "/tmp/jetmoe-compare-" + std::to_string(getpid()) + ".bin";
  struct Cleanup {
    std::string p;
    ~Cleanup() { std::remove(p.c_str()); }
  } cleanup{ref_path};

  auto measure = [&](const std::string& type, bool reference, const EvalRun* ref) {
    return in_child(type, [&]() -> nlohmann::json {
      reset_peak_rss();
      ModelOptions mo = o.model;
      mo.quant = reference ? "" : type;
      std::fprintf(stderr, "compare-quants: %s: loading%s\n", type.c_str(), reference ? "" : " and quantizing");
      LoadedModel lm = load_model(mo);
      const double tg = decode_tps(*lm.model, decode_prompt, o.decode_tokens);
      std::fprintf(stderr, "compare-quants: %s: evaluating %zu windows\n", type.c_str(), windows.windows.size());
      const EvalRun run = evaluate_windows(*lm.model, windows, true);
      nlohmann::json j;
      j["type"] = type;
      j["weights_bytes"] = lm.files->tensors->file_bytes();
      j["bytes_per_token"] = lm.files->bytes_per_token();
      j["peak_rss_bytes"] = static_cast<int64_t>(peak_rss_kib()) * 1024;
      j["prefill_tps"] = run.prefill_seconds > 0 ? static_cast<double>(run.prefill_tokens) / run.prefill_seconds : 0;
      j["decode_tps"] = tg;
      double ppl, err;
      perplexity(run, ppl, err);
      j["ppl"] = ppl;
      j["ppl_err"] = err;
      if (reference) {
        save_run(ref_path, run);
      } else {
        const QualityStats q = compare_runs(*ref, run, lm.files->config.vocab_size, lm.files->config.num_hidden_layers,
                                            lm.files->config.num_experts_per_tok);
        j["kld_mean"] = q.kld_mean;
        j["kld_median"] = q.kld_median;
        j["kld_p99"] = q.kld_p99;
        j["kld_max"] = q.kld_max;
        j["same_top_pct"] = q.same_top_pct;
        j["expert_agree_pct"] = q.expert_agree_pct;
        j["expert_agree_moa_pct"] = q.expert_agree_moa_pct;
        j["expert_agree_moe_pct"] = q.expert_agree_moe_pct;
      }
      return j;
    });
  };

  const std::string ref_name = dtype_name(files->weights.layers.at(0).moe.w_in.dtype);
  nlohmann::json rows = nlohmann::json::array();
  nlohmann::json ref_row = measure(std::string(ref_name), true, nullptr);
  ref_row["kld_mean"] = ref_row["kld_median"] = ref_row["kld_p99"] = ref_row["kld_max"] = 0.0;
  ref_row["same_top_pct"] = ref_row["expert_agree_pct"] = ref_row["expert_agree_moa_pct"] = ref_row["expert_agree_moe_pct"] = 100.0;
  rows.push_back(ref_row);
  const EvalRun ref = load_run(ref_path);  // inherited by every child below
  for (const std::string& t : o.types) rows.push_back(measure(t, false, &ref));

  nlohmann::ordered_json doc;
  doc["model"] = path;
  doc["text"] = o.file;
  doc["ctx"] = windows.ctx;
  doc["windows"] = windows.windows.size();
  doc["scored_tokens"] = scored;
  doc["threads"] = o.model.effective_threads();
  doc["load_mode"] = load_mode_name(o.model.load_options().mode);
  doc["levels"] = rows;

  if (o.json) {
    std::cout << doc.dump(2) << "\n";
  } else {
    std::printf("%-8s %10s %10s %9s %9s %17s %9s %9s %9s %8s %16s\n", "type", "weights", "peak RSS", "pp tok/s", "tg tok/s",
                "PPL", "KLD mean", "KLD med", "KLD p99", "same top", "experts MoA/MoE");
    for (const auto& r : rows) {
      std::printf("%-8s %7.1f MiB %6.1f MiB %9.1f %9.1f %8.3f ± %6.3f %9.5f %9.5f %9.5f %7.2f%% %7.2f/%6.2f%%\n",
                  r["type"].get<std::string>().c_str(), r["weights_bytes"].get<double>() / 1048576.0,
                  r["peak_rss_bytes"].get<double>() / 1048576.0, r["prefill_tps"].get<double>(), r["decode_tps"].get<double>(),
                  r["ppl"].get<double>(), r["ppl_err"].get<double>(), r["kld_mean"].get<double>(), r["kld_median"].get<double>(),
                  r["kld_p99"].get<double>(), r["same_top_pct"].get<double>(), r["expert_agree_moa_pct"].get<double>(),
                  r["expert_agree_moe_pct"].get<double>());
    }
    std::printf("(%zu windows of %d tokens, second halves scored: %zu tokens; experts = tokens whose top-%d set equals full precision's)\n",
                windows.windows.size(), windows.ctx, scored, files->config.num_experts_per_tok);
  }
  if (!o.json_file.empty()) write_file_atomic(o.json_file, doc.dump(2) + "\n");
  if (!o.csv.empty()) {
    std::ostringstream c;
    c << "type,weights_bytes,peak_rss_bytes,bytes_per_token,prefill_tps,decode_tps,ppl,ppl_err,kld_mean,kld_median,kld_p99,kld_max,"
         "same_top_pct,expert_agree_pct,expert_agree_moa_pct,expert_agree_moe_pct\n";
    for (const auto& r : rows) {
      c << r["type"].get<std::string>();
      for (const char* k : {"weights_bytes", "peak_rss_bytes", "bytes_per_token", "prefill_tps", "decode_tps", "ppl", "ppl_err",
                            "kld_mean", "kld_median", "kld_p99", "kld_max", "same_top_pct", "expert_agree_pct",
                            "expert_agree_moa_pct", "expert_agree_moe_pct"})
        c << "," << r[k].dump();
      c << "\n";
    }
    write_file_atomic(o.csv, c.str());
  }
  if (!o.plot.empty()) write_file_atomic(o.plot, quant_plot_svg(rows));
}

}  // namespace

void add_compare_quants_command(CLI::App& app) {
  auto o = std::make_shared<CompareOptions>();
  CLI::App* sub = app.add_subcommand("compare-quants",
                                     "Quality (perplexity, KL-divergence, same top token, expert agreement), size and speed of each "
                                     "quantization level against full precision, in one table");
  o->model.add_to(*sub);
  sub->add_option("-f,--file", o->file, "Text to evaluate on (e.g. a held-out document)")->required()->check(CLI::ExistingFile);
  sub->add_option("--types", o->types, "Quantization levels to compare")->delimiter(',')->check(CLI::IsMember(quant_mix_names()));
  sub->add_option("--ctx", o->ctx, "Window size in tokens (the second half of each window is scored)")->check(CLI::Range(8, 1 << 16));
  sub->add_option("--chunks", o->chunks, "Windows to evaluate (0: all)")->check(CLI::NonNegativeNumber);
  sub->add_option("--decode-tokens", o->decode_tokens, "Tokens decoded to time generation speed")->check(CLI::Range(1, 100000));
  sub->add_flag("--json", o->json, "Print JSON instead of the table");
  sub->add_option("--json-file", o->json_file, "Also write the JSON to this file");
  sub->add_option("--csv", o->csv, "Also write a CSV file");
  sub->add_option("--plot", o->plot, "Also draw quality against size and speed as an SVG file")->check([](const std::string& p) {
    return p.size() > 4 && p.substr(p.size() - 4) == ".svg" ? std::string() : std::string("--plot writes SVG: give a .svg file name");
  });
  sub->callback([o] { run_compare(*o); });
}

}  // namespace jetmoe::cli
