// jetmoe score: log-likelihoods of text.
//  - Machine interface: `--ids 1,5,9 --format json` (or `-p TEXT`) prints one JSON object.
//  - Batch scoring: `jetmoe score FILE... [-o OUT.jsonl]` writes one JSONL line per record
//    (documents, or --pairs context/continuation records), resumable, shardable across machines.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/atomic_file.h"
#include "cli/common_options.h"
#include "cli/progress.h"
#include "cli/score_records.h"
#include "runtime/scorer.h"

namespace fs = std::filesystem;

namespace jetmoe::cli {
namespace {

struct ScoreOptions {
  ModelOptions model;
  // single sequence
  std::string ids, prompt;
  std::string format = "text";
  // batch
  std::vector<std::string> files;
  std::string output, summary;
  bool resume = false, overwrite = false, strict = false;
  std::string input_format = "auto";
  bool whole_file = false, pairs = false, per_token = false, no_bos = false;
  std::string field = "text", id_field = "id";
  int top_k = 0, stride = 0, batch_tokens = 512;
  int num_shards = 0, shard_index = -1;
};

// ---------------------------------------------------------------- single sequence (machine interface)

void run_single(const ScoreOptions& o, LoadedModel& lm) {
  const ModelFiles& files = *lm.files;
  std::vector<int32_t> ids = !o.ids.empty() ? parse_id_list(o.ids, "--ids") : files.require_tokenizer().encode_prompt(o.prompt);
  const int V = files.config.vocab_size;
  for (int32_t id : ids)
    if (id >= V)
      throw CLI::ValidationError("--ids", "token id " + std::to_string(id) + " is outside the vocabulary 0.." + std::to_string(V - 1));
  if (ids.size() < 2) throw CLI::ValidationError("--ids", "need at least 2 tokens to score (the first is only context)");
  if (static_cast<int>(ids.size()) > lm.ctx_size)
    throw std::runtime_error("the sequence has " + std::to_string(ids.size()) + " tokens; the context holds " +
                             std::to_string(lm.ctx_size) + " (use -c up to " +
                             std::to_string(files.config.max_position_embeddings) + ", or batch mode, which slides a window)");
  ScorerOptions so;
  so.window = static_cast<int>(ids.size());
  so.per_token = true;
  Scorer scorer(*lm.model, so);
  const SequenceScore s = scorer.score({ScoreRequest{ids, 1}}).front();
  std::vector<double> lp;
  for (const auto& t : s.tokens) lp.push_back(t.logprob);
  const double n = static_cast<double>(lp.size());
  if (o.format == "json") {
    nlohmann::ordered_json j;
    j["ids"] = ids;
    j["token_logprobs"] = lp;
    j["sum_logprob"] = s.sum_logprob;
    j["mean_nll"] = -s.sum_logprob / n;
    j["perplexity"] = std::exp(-s.sum_logprob / n);
    std::cout << j.dump() << "\n";
    return;
  }
  for (size_t i = 1; i < ids.size(); ++i) {
    const std::string piece = files.tokenizer ? files.tokenizer->piece(ids[i]) : std::to_string(ids[i]);
    std::printf("%6zu %8d %-20s %12.6f\n", i, ids[i], piece.c_str(), lp[i - 1]);
  }
  std::printf("tokens scored %zu, sum logprob %.6f, mean NLL %.6f, perplexity %.4f\n", lp.size(), s.sum_logprob,
              -s.sum_logprob / n, std::exp(-s.sum_logprob / n));
}

// ---------------------------------------------------------------- batch

struct Totals {
  int64_t records = 0, scored = 0, skipped = 0, tokens = 0;
  double sum_logprob = 0;
  void add_line(const nlohmann::json& j) {
    ++records;
    if (j.value("skipped", false)) {
      ++skipped;
      return;
    }
    ++scored;
    tokens += j.value("n_tokens", int64_t{0});
    sum_logprob += j.contains("logprob") ? j["logprob"].get<double>() : j.value("sum_logprob", 0.0);
  }
};

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end != '\0') throw std::runtime_error(std::string("environment variable ") + name + "='" + v + "' is not an integer");
  return static_cast<int>(x);
}

// lm-evaluation-harness's pair encoding: trailing spaces of the context move to the continuation,
// the whole string is encoded once, and the continuation is what follows the context's tokens.
void encode_pair(const Tokenizer& tok, std::string ctx, std::string cont, std::vector<int32_t>& ids, size_t& score_from,
                 bool bos) {
  while (!ctx.empty() && ctx.back() == ' ') {
    ctx.pop_back();
    cont.insert(cont.begin(), ' ');
  }
  const std::vector<int32_t> whole = tok.encode(ctx + cont), ctx_ids = ctx.empty() ? std::vector<int32_t>{} : tok.encode(ctx);
  ids.clear();
  if (bos) ids.push_back(tok.bos_id());
  if (whole.size() > ctx_ids.size() && std::equal(ctx_ids.begin(), ctx_ids.end(), whole.begin())) {
    ids.insert(ids.end(), whole.begin(), whole.end());
    score_from = (bos ? 1 : 0) + ctx_ids.size();
  } else {
    const std::vector<int32_t> cont_ids = tok.encode(cont);
    ids.insert(ids.end(), ctx_ids.begin(), ctx_ids.end());
    score_from = ids.size();
    ids.insert(ids.end(), cont_ids.begin(), cont_ids.end());
  }
}

void run_batch(const ScoreOptions& o, LoadedModel& lm) {
  const ModelFiles& files = *lm.files;
  const Tokenizer& tok = files.require_tokenizer();

  // Shards: flags win, then Slurm array variables, else one shard.
  int num_shards = o.num_shards > 0 ? o.num_shards : env_int("SLURM_ARRAY_TASK_COUNT", 1);
  int shard_index = o.shard_index >= 0 ? o.shard_index : (o.num_shards > 0 ? 0 : env_int("SLURM_ARRAY_TASK_ID", 0));
  if (o.num_shards <= 0 && std::getenv("SLURM_ARRAY_TASK_ID") && std::getenv("SLURM_ARRAY_TASK_MIN"))
    shard_index -= env_int("SLURM_ARRAY_TASK_MIN", 0);  // arrays may start at 1
  if (num_shards < 1 || shard_index < 0 || shard_index >= num_shards)
    throw CLI::ValidationError("--shard-index", "shard " + std::to_string(shard_index) + " is outside 0.." +
                                                    std::to_string(num_shards - 1));

  RecordReaderOptions ro;
  ro.whole_file = o.whole_file;
  ro.pairs = o.pairs;
  ro.field = o.field;
  ro.id_field = o.id_field;
  const std::vector<std::string> inputs = o.files.empty() ? std::vector<std::string>{"-"} : o.files;
  ro.format = o.input_format == "jsonl" ? InputFormat::Jsonl
              : o.input_format == "text" ? InputFormat::Text
                                         : guess_format(inputs.front());
  for (const std::string& f : inputs)
    if (f != "-" && !fs::exists(f)) throw std::runtime_error(f + ": no such file");

  // Output: appended record by record to OUT.partial, renamed to OUT when the run completes.
  Totals totals;
  int64_t resume_skip = 0;
  std::ofstream out_file;
  std::ostream* out = &std::cout;
  const std::string partial = o.output.empty() ? "" : o.output + ".partial";
  if (!o.output.empty()) {
    if (fs::exists(o.output) && !o.overwrite) {
      if (o.resume) {
        std::fprintf(stderr, "%s is already complete; nothing to resume\n", o.output.c_str());
        return;
      }
      throw std::runtime_error(o.output + " exists; pass --overwrite to replace it");
    }
    if (fs::exists(partial)) {
      if (!o.resume)
        throw std::runtime_error(partial + " exists (an interrupted run): pass --resume to continue it, or delete it");
      // Keep every complete line; a line cut by the kill is dropped and its record redone.
      std::ifstream in(partial, std::ios::binary);
      std::string line, kept;
      while (std::getline(in, line)) {
        if (in.eof()) break;  // no newline: incomplete
        try {
          totals.add_line(nlohmann::json::parse(line));
        } catch (const nlohmann::json::exception&) {
          break;
        }
        kept += line + "\n";
      }
      in.close();
      fs::resize_file(partial, kept.size());
      resume_skip = totals.records;
      std::fprintf(stderr, "resuming: %lld records already in %s\n", static_cast<long long>(resume_skip), partial.c_str());
    } else if (o.resume) {
      std::fprintf(stderr, "no %s to resume; starting from the beginning\n", partial.c_str());
    }
    out_file.open(partial, std::ios::binary | std::ios::app);
    if (!out_file) throw std::runtime_error(partial + ": cannot open for writing");
    out = &out_file;
  }

  ScorerOptions so;
  so.window = lm.ctx_size;
  so.stride = o.stride;
  so.batch_tokens = o.batch_tokens;
  so.per_token = o.per_token;
  so.top_k = o.top_k;
  Scorer scorer(*lm.model, so);
  const bool bos = tok.add_bos() && !o.no_bos;

  const int64_t total_all = RecordReader::count(inputs, ro);
  const int64_t total = total_all > 0 ? (total_all - shard_index + num_shards - 1) / num_shards : 0;
  Progress progress("scoring", total);
  RecordReader reader(inputs, ro);
  int64_t shard_seen = 0, run_tokens = 0;
  const auto t0 = std::chrono::steady_clock::now();

  std::vector<ScoreRecord> group;
  std::vector<ScoreRequest> reqs;
  std::vector<size_t> req_of;  // record in group -> request index (or SIZE_MAX when skipped)

  auto write_line = [&](const nlohmann::ordered_json& j) {
    const std::string s = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    out->write(s.data(), static_cast<std::streamsize>(s.size()));
    totals.add_line(nlohmann::json::parse(s));
  };
  auto flush_group = [&] {
    std::vector<SequenceScore> scores = reqs.empty() ? std::vector<SequenceScore>{} : scorer.score(reqs);
    for (size_t g = 0; g < group.size(); ++g) {
      const ScoreRecord& r = group[g];
      nlohmann::ordered_json j;
      j["index"] = r.index;
      j["id"] = r.id;
      if (inputs.size() > 1) j["file"] = r.file;
      if (req_of[g] == SIZE_MAX) {
        j["skipped"] = true;
        j["error"] = r.error;
        std::fprintf(stderr, "%s: record %s skipped: %s\n", r.file.c_str(), r.id.dump().c_str(), r.error.c_str());
        write_line(j);
        continue;
      }
      const SequenceScore& s = scores[req_of[g]];
      run_tokens += s.tokens_scored;
      j["n_tokens"] = s.tokens_scored;
      if (o.pairs) {
        j["logprob"] = s.sum_logprob;
        j["is_greedy"] = s.all_greedy;
      } else {
        j["sum_logprob"] = s.sum_logprob;
        j["mean_nll"] = -s.sum_logprob / static_cast<double>(s.tokens_scored);
        j["ppl"] = std::exp(-s.sum_logprob / static_cast<double>(s.tokens_scored));
      }
      if (o.per_token) {
        std::vector<std::string> pieces;
        std::vector<int32_t> ids;
        std::vector<double> lps;
        nlohmann::ordered_json top = nlohmann::ordered_json::array();
        for (const TokenScore& t : s.tokens) {
          ids.push_back(t.id);
          pieces.push_back(tok.piece(t.id));
          lps.push_back(t.logprob);
          if (o.top_k > 0) {
            nlohmann::ordered_json alts = nlohmann::ordered_json::array();
            for (const auto& [id, lp] : t.top) alts.push_back({{"id", id}, {"token", tok.piece(id)}, {"logprob", lp}});
            top.push_back(alts);
          }
        }
        j["tokens"] = pieces;
        j["token_ids"] = ids;
        j["token_logprobs"] = lps;
        if (o.top_k > 0) j["top_k"] = top;
      }
      write_line(j);
    }
    out->flush();
    if (!*out) throw std::runtime_error((o.output.empty() ? std::string("stdout") : partial) + ": write failed (disk full?)");
    group.clear();
    reqs.clear();
    req_of.clear();
    progress.update(totals.records, run_tokens);
  };

  ScoreRecord rec;
  size_t group_tokens = 0;
  while (reader.next(rec)) {
    if (rec.index % num_shards != shard_index) continue;
    if (shard_seen++ < resume_skip) continue;
    if (rec.error.empty()) {
      try {
        std::vector<int32_t> ids;
        size_t from = 1;
        if (o.pairs) {
          encode_pair(tok, rec.context, rec.continuation, ids, from, bos);
        } else {
          ids = tok.encode(rec.text);
          if (bos) ids.insert(ids.begin(), tok.bos_id());
        }
        if (ids.size() < 2 || from >= ids.size()) {
          rec.error = "too short to score (" + std::to_string(ids.size()) + " tokens)";
        } else {
          group_tokens += ids.size();
          reqs.push_back({std::move(ids), from});
        }
      } catch (const std::exception& e) {
        rec.error = e.what();
      }
    }
    if (!rec.error.empty() && o.strict)
      throw std::runtime_error(rec.file + ": record " + rec.id.dump() + ": " + rec.error + " (--strict)");
    req_of.push_back(rec.error.empty() ? reqs.size() - 1 : SIZE_MAX);
    group.push_back(std::move(rec));
    if (group.size() >= 256 || group_tokens >= static_cast<size_t>(8 * so.batch_tokens)) {
      flush_group();
      group_tokens = 0;
    }
  }
  flush_group();
  progress.finish(totals.records, run_tokens);
  if (!o.output.empty()) {
    out_file.close();
    commit_file(partial, o.output);
  }

  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  nlohmann::ordered_json sum;
  sum["records"] = totals.records;
  sum["scored"] = totals.scored;
  sum["skipped"] = totals.skipped;
  sum["n_tokens"] = totals.tokens;
  sum["sum_logprob"] = totals.sum_logprob;
  sum["mean_nll"] = totals.tokens ? -totals.sum_logprob / static_cast<double>(totals.tokens) : 0.0;
  sum["perplexity"] = totals.tokens ? std::exp(-totals.sum_logprob / static_cast<double>(totals.tokens)) : 0.0;
  sum["tokens_this_run"] = run_tokens;
  sum["seconds"] = secs;
  sum["tokens_per_second"] = secs > 0 ? static_cast<double>(run_tokens) / secs : 0.0;
  sum["num_shards"] = num_shards;
  sum["shard_index"] = shard_index;
  sum["window"] = scorer.options().window;
  sum["stride"] = scorer.options().stride;
  sum["mode"] = o.pairs ? "pairs" : "documents";
  std::fprintf(stderr, "%lld records (%lld scored, %lld skipped), %lld tokens, corpus perplexity %.4f, %.1f tok/s\n",
               static_cast<long long>(totals.records), static_cast<long long>(totals.scored),
               static_cast<long long>(totals.skipped), static_cast<long long>(totals.tokens), sum["perplexity"].get<double>(),
               sum["tokens_per_second"].get<double>());
  if (!o.summary.empty()) write_file_atomic(o.summary, sum.dump(2) + "\n");
}

void run_score(const ScoreOptions& o) {
  const bool single = !o.ids.empty() || !o.prompt.empty();
  if (!o.ids.empty() && !o.prompt.empty()) throw CLI::ValidationError("--ids/-p", "give only one of --ids and -p");
  if (single && !o.files.empty()) throw CLI::ValidationError("--ids/-p", "give either --ids/-p or input files, not both");
  LoadedModel lm = load_model(o.model);
  if (single) return run_single(o, lm);
  run_batch(o, lm);
}

}  // namespace

void add_score_command(CLI::App& app) {
  auto o = std::make_shared<ScoreOptions>();
  CLI::App* sub = app.add_subcommand(
      "score", "Log-likelihood of text: one sequence (--ids / -p), or every record of text/JSONL files (JSONL out)");
  o->model.add_to(*sub);
  sub->add_option("files", o->files, "Input files ('-' or none: stdin); .jsonl/.json are JSONL unless --input-format says otherwise");
  sub->add_option("--ids", o->ids, "Score these comma-separated token ids (no BOS added) and print one result");
  sub->add_option("-p,--prompt", o->prompt, "Score this text (BOS added as the tokenizer says) and print one result");
  sub->add_option("--format", o->format, "Output of --ids/-p: text table or one JSON object")->check(CLI::IsMember({"text", "json"}));
  sub->add_option("-o,--output", o->output, "Write JSONL here (appended as OUT.partial, renamed when complete) instead of stdout");
  sub->add_flag("--resume", o->resume, "Continue an interrupted run from OUT.partial");
  sub->add_flag("--overwrite", o->overwrite, "Replace an existing complete OUT");
  sub->add_flag("--strict", o->strict, "Stop at the first bad record instead of skipping it");
  sub->add_option("--input-format", o->input_format, "Input format")->check(CLI::IsMember({"auto", "text", "jsonl"}));
  sub->add_flag("--whole-file", o->whole_file, "Each input file is one document (default: one per line)");
  sub->add_option("--field", o->field, "JSONL field holding the text");
  sub->add_option("--id-field", o->id_field, "JSONL field carried through as the record id (default: line number)");
  sub->add_flag("--pairs", o->pairs, "JSONL records {\"context\", \"continuation\"}: log-likelihood of the continuation and is_greedy");
  sub->add_flag("--per-token", o->per_token, "Include every token and its log-probability");
  sub->add_option("--top-k", o->top_k, "With --per-token: the k most likely alternatives at each position")->check(CLI::Range(0, 100));
  sub->add_option("--stride", o->stride, "Sliding-window step for documents longer than the context (default: half the context)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("-b,--batch-size", o->batch_tokens, "Tokens packed into one forward pass")->check(CLI::Range(16, 1 << 20));
  sub->add_flag("--no-bos", o->no_bos, "Do not prepend BOS to each record");
  sub->add_option("--num-shards", o->num_shards, "Score a 1/N share of the records (default: $SLURM_ARRAY_TASK_COUNT or 1)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--shard-index", o->shard_index, "Which share, 0..N-1 (default: $SLURM_ARRAY_TASK_ID or 0)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--summary", o->summary, "Also write the corpus summary as JSON to this file");
  sub->callback([o] { run_score(*o); });
}

}  // namespace jetmoe::cli
