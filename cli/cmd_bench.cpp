// jetmoe bench: prefill and decode speed in the spirit of llama-bench, with the memory-bandwidth
// limit measured in the same run.
//
// For every model (checkpoint folders, and/or a random-weight model with JetMoE-8B's shapes built
// in memory with --synth), every weight type (--quant) and every thread count (-t) it runs:
//   pp<P>  prefill: P random tokens through one forward call on an empty cache, tokens/s;
//   tg<N>  decode: N single-token forward calls from an empty cache, tokens/s;
// each -r times after an untimed warm-up, reporting median, min-max and standard deviation.
// Decode also reports the weight bytes read per token (ModelFiles::bytes_per_token: selected
// experts + shared parts + head), the GB/s that implies, and its ratio to a streaming-read probe
// at the same thread count, measured right before and right after each repetition (the ratio is
// the median over repetitions of achieved / the mean of its two probes: on a shared machine the
// bandwidth moves from one minute to the next, so each repetition is held against its own). --busy adds a decode row with another process
// spinning on one core. -ctk/-ctv list KV cache types to compare; -d runs both tests after that
// many tokens already in the cache (llama-bench's depth: one real prefill fills it, each
// repetition rolls back to it), and decode then also counts the KV cache bytes it reads.
// The table (or --json) goes to stdout, progress to stderr.
#include <cblas.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli/atomic_file.h"
#include "cli/cmd_bench_probes.h"
#include "cli/common_options.h"
#include "loader/quantize_weights.h"
#include "loader/synthetic_model.h"
#include "ops/cpu/cpu_isa.h"
#include "quant/stream_prefetch.h"
#include "runtime/build_info.h"

namespace jetmoe::cli {
namespace {

struct BenchOptions {
  std::vector<std::string> models;  // checkpoint folders
  bool synth = false;
  bool gguf_layout = false;  // --synth weights left in the GGUF block layout
  int layers = 4;
  std::string threads = "";  // "1,2"; empty: all cores
  std::string quants = "none";
  std::string cache_types_k = "f32", cache_types_v = "f32";  // comma lists, paired in order
  int n_prompt = 512, n_gen = 128, reps = 3, depth = 0;
  bool no_mmap = false, mlock = false, json = false, busy = false, warmup = true;
  double bw_gib = 1.0;
  int bw_passes = 5;
  long long seed = 1;
  std::string json_file;  // also write the JSON here
  std::string prefetch;   // decode prefetch distances in bytes, "0,4096"; empty: this CPU's setting
  std::string device = "cpu";
};

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

struct Stats {
  std::vector<double> samples;  // tokens/s of each repetition
  double median = 0, min = 0, max = 0, mean = 0, stddev = 0;
};

Stats summarize(std::vector<double> v) {
  Stats s;
  s.samples = v;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.min = v.front();
  s.max = v.back();
  s.median = median_of(v);
  for (double x : v) s.mean += x;
  s.mean /= static_cast<double>(v.size());
  for (double x : v) s.stddev += (x - s.mean) * (x - s.mean);
  s.stddev = v.size() > 1 ? std::sqrt(s.stddev / static_cast<double>(v.size() - 1)) : 0.0;
  return s;
}

// Weights multiplied per token, counted like bytes_per_token (selected experts, shared kv_proj
// and routers, the head; the embedding is a row lookup): prefill GFLOP/s = 2 x this x tokens/s,
// the convention of the anchor figures (which include the head).
double active_weights_per_token(const ModelFiles& f) {
  const double k = f.config.num_experts_per_tok, E = f.config.num_local_experts;
  double n = static_cast<double>(f.weights.lm_head.numel());
  for (const LayerWeights& l : f.weights.layers)
    n += static_cast<double>(l.moa.kv_proj.numel() + l.moa.router.numel() + l.moe.router.numel()) +
         static_cast<double>(l.moa.q_experts.numel() + l.moa.o_experts.numel() + l.moe.w_in.numel() + l.moe.w_out.numel()) / E * k;
  return n;
}

// MemAvailable from /proc/meminfo, 0 when unknown.
size_t available_ram_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  size_t kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  return 0;
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

std::string bytes_text(double b) { return b >= 1e8 ? fmt("%.3f GB", b / 1e9) : fmt("%.3f MB", b / 1e6); }

struct Loaded {
  std::unique_ptr<ModelFiles> files;
  std::string name, type, load_mode;
};

Loaded load_one(const BenchOptions& o, const std::string& model, const std::string& type) {
  Loaded L;
  L.type = type;
  if (model.empty()) {  // synthetic
    const std::string t = type == "none" ? "bf16" : type;  // JetMoE-8B's own weights are bf16
    L.type = t;
    const JetMoeConfig cfg = jetmoe_8b_config(o.layers);
    const size_t need = synthetic_model_bytes(cfg, t);
    const size_t avail = available_ram_bytes();
    if (avail != 0 && need > avail / 10 * 9)
      throw std::runtime_error("a synthetic " + t + " model of " + std::to_string(o.layers) + " layers needs " +
                               fmt("%.1f", need / 1e9) + " GB; only " + fmt("%.1f", avail / 1e9) +
                               " GB of RAM is available (use fewer --layers)");
    std::fprintf(stderr, "bench: building synthetic JetMoE-8B-shape model, %d layers, %s (%.2f GB)...\n", o.layers,
                 t.c_str(), need / 1e9);
    const auto t0 = std::chrono::steady_clock::now();
    L.files = make_synthetic_model(cfg, t, static_cast<uint64_t>(o.seed), o.gguf_layout);
    std::fprintf(stderr, "bench: built in %.1f s\n",
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    L.name = "synth-8b-" + std::to_string(o.layers) + "L";
    L.load_mode = o.gguf_layout ? "memory (synthetic, GGUF layout)" : "memory (synthetic)";
    return L;
  }
  ModelOptions mo;
  mo.model = model;
  mo.no_mmap = o.no_mmap;
  mo.mlock = o.mlock;
  LoadOptions lo = mo.load_options();
  if (type != "none") lo.quant = type;
  std::fprintf(stderr, "bench: loading %s (%s)...\n", model.c_str(), type.c_str());
  L.files = load_model_files(model, lo);
  L.name = std::filesystem::path(model).filename().string();
  if (L.name.empty()) L.name = model;
  // Quantized at load: the weights live in owned memory whatever the file mode was.
  L.load_mode = type == "none" ? load_mode_name(lo.mode) : std::string("memory (quantized at load)");
  if (type == "none") {
    std::string dt = dtype_name(L.files->weights.layers.empty() ? L.files->weights.embed.dtype
                                                                  : L.files->weights.layers[0].moe.w_in.dtype);
    std::transform(dt.begin(), dt.end(), dt.begin(), ::tolower);
    L.type = dt;
  }
  return L;
}

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Runner {
  JetMoeModel& model;
  std::vector<int32_t> prompt, gen;
  std::vector<float> logits;

  int depth = 0;  // tokens already in the cache before each test (filled once by fill_depth)

  void fill_depth(KvCache& cache) {
    cache.clear();
    for (int done = 0; done < depth;) {  // in 512-token pieces, like a long prompt
      const int n = std::min(512, depth - done);
      model.forward(std::span<const int32_t>(prompt.data() + done, static_cast<size_t>(n)), cache, logits, false);
      done += n;
    }
  }
  double prefill(KvCache& cache, int n) {
    cache.set_size(depth);
    const auto t0 = Clock::now();
    model.forward(std::span<const int32_t>(prompt.data(), static_cast<size_t>(n)), cache, logits, false);
    return n / seconds_since(t0);
  }
  double decode(KvCache& cache, int n) {
    cache.set_size(depth);
    const auto t0 = Clock::now();
    for (int i = 0; i < n; ++i) model.forward(std::span<const int32_t>(&gen[static_cast<size_t>(i)], 1), cache, logits, false);
    return n / seconds_since(t0);
  }
};

// A --prefetch value as the progress lines name it.
std::string prefetch_label(const std::optional<size_t>& p) {
  return p ? std::to_string(*p) : "default (" + decode_prefetch_summary() + ")";
}

void run_bench(BenchOptions& o) {
  if (o.no_mmap && o.mlock) throw CLI::ValidationError("--no-mmap and --mlock", "choose one of them");
  if (o.reps < 1) throw CLI::ValidationError("-r", "at least one repetition");
  std::vector<int> threads;
  for (const std::string& t : split_list(o.threads.empty() ? std::to_string(omp_get_num_procs()) : o.threads)) {
    int v = 0;
    try {
      v = std::stoi(t);
    } catch (const std::exception&) {
    }
    if (v < 1) throw CLI::ValidationError("-t", "'" + t + "' is not a thread count (e.g. -t 1,2)");
    threads.push_back(v);
  }
  const std::vector<std::string> types = split_list(o.quants);
  std::vector<KvCacheTypes> kv_types;
  {
    const auto ks = split_list(o.cache_types_k), vs = split_list(o.cache_types_v);
    if (ks.empty() || vs.empty() || (ks.size() != vs.size() && ks.size() != 1 && vs.size() != 1))
      throw CLI::ValidationError("-ctk/-ctv", "give one type each, or lists of the same length (paired in order)");
    for (size_t i = 0; i < std::max(ks.size(), vs.size()); ++i)
      kv_types.push_back({parse_kv_cache_type(ks[std::min(i, ks.size() - 1)], "--cache-type-k"),
                          parse_kv_cache_type(vs[std::min(i, vs.size() - 1)], "--cache-type-v")});
  }
  if (types.empty()) throw CLI::ValidationError("--quant", "no types given");
  // Decode prefetch distances: one row per value, their repetitions interleaved (A, B, A, B, ...)
  // so that a comparison sees the same minutes of this machine's moving bandwidth.
  // Without --prefetch, one row with this CPU's settings (JETMOE_PREFETCH, else each weight
  // type's default: quant/stream_prefetch.h); a value given applies to every stream and type.
  std::vector<std::optional<size_t>> prefetches;
  for (const std::string& v : split_list(o.prefetch)) {
    if (v == "default") {
      prefetches.push_back(std::nullopt);
      continue;
    }
    try {
      prefetches.push_back(parse_decode_prefetch_bytes(v, "'" + v + "'"));
    } catch (const std::runtime_error& e) {
      throw CLI::ValidationError("--prefetch", e.what());
    }
  }
  if (prefetches.empty()) prefetches.push_back(std::nullopt);
  const bool sweep_prefetch = prefetches.size() > 1;
  const auto use_prefetch = [](const std::optional<size_t>& p) {
    if (p) set_decode_prefetch_bytes(*p);
    else reset_decode_prefetch_bytes();
  };
  std::vector<std::string> models;
  for (const std::string& m : o.models)
    for (const std::string& p : split_list(m)) models.push_back(p);
  if (o.synth) models.push_back("");  // "" = the synthetic model
  if (o.gguf_layout && !o.synth)
    throw CLI::ValidationError("--gguf-layout", "applies to --synth only (a .gguf checkpoint runs in that layout when mmapped)");
  if (models.empty()) models.push_back(default_model_path());
  for (const std::string& t : types) {
    const auto known = synthetic_type_names();
    if (t != "none" && std::find(known.begin(), known.end(), t) == known.end())
      throw CLI::ValidationError("--quant", "unknown type '" + t + "' (none, f32, bf16, f16, q8_0, q4_0, q4_k, q4_0-pure, q4_k-pure)");
    const bool float_type = t == "f32" || t == "bf16" || t == "f16";
    if (float_type && std::any_of(models.begin(), models.end(), [](const std::string& m) { return !m.empty(); }))
      throw CLI::ValidationError("--quant", "'" + t + "' applies to --synth only; a checkpoint runs its own float weights with 'none'");
  }

  const int max_threads = *std::max_element(threads.begin(), threads.end());
  omp_set_num_threads(max_threads);
  const std::string device = resolve_device(o.device);
  const bool on_gpu = device != "cpu";
  const size_t probe_bytes = static_cast<size_t>(o.bw_gib * 1024.0 * 1024.0 * 1024.0);
  // The CPU probe reads host memory with the thread count of each row; a GPU backend measures its
  // own memory (Backend::measure_read_bandwidth_gbps), which is what its decode streams from.
  std::optional<ReadBandwidthProbe> cpu_probe;
  if (!on_gpu) {
    std::fprintf(stderr, "bench: allocating the %.2f GiB bandwidth probe buffer...\n", o.bw_gib);
    cpu_probe.emplace(probe_bytes);
  }

  const char* wait_policy = std::getenv("OMP_WAIT_POLICY");
  nlohmann::ordered_json report;
  report["jetmoe_version"] = JETMOE_VERSION;
  report["build"] = {{"compiler", build_info().compiler},
                     {"build_type", build_info().build_type},
                     {"kernels_o3", build_info().kernels_o3}};
  report["isa"] = isa_name(active_isa());
  report["cpu_vendor"] = cpu_vendor();
  report["cpu_features"] = cpu_feature_summary();
  // The settings in force outside the rows; each decode row has its own.
  report["decode_prefetch_bytes"] = decode_prefetch_bytes();
  report["decode_prefetch_by_type"] = decode_prefetch_by_type_json();
  report["decode_prefetch"] = decode_prefetch_summary();
  report["decode_stream"] = decode_stream_summary();
  report["kv_touch_bytes"] = kv_touch_bytes();
  report["kv_row_prefetch"] = kv_row_prefetch_summary();
  report["omp_wait_policy"] = wait_policy ? wait_policy : "";
  report["openblas_core"] = openblas_get_corename();
  report["n_prompt"] = o.n_prompt;
  report["n_gen"] = o.n_gen;
  report["repetitions"] = o.reps;
  report["device"] = device;
  report["bandwidth_probe_bytes"] = on_gpu ? probe_bytes : cpu_probe->bytes();
  report["results"] = nlohmann::ordered_json::array();

  std::mt19937 rng(static_cast<uint32_t>(o.seed));
  for (const std::string& model_path : models) {
    for (const std::string& type : types) {
      omp_set_num_threads(max_threads);  // building / quantizing uses every thread asked for
      Loaded L = load_one(o, model_path, type);
      auto backend = make_backend(device);
      if (on_gpu) std::fprintf(stderr, "bench: uploading the weights to %s...\n", backend->name().c_str());
      JetMoeModel model(L.files->config, L.files->weights, *backend);
      report["backend"] = backend->name();
      auto measure_bw = [&]() -> BandwidthResult {
        if (!on_gpu) return cpu_probe->measure(o.bw_passes);
        BandwidthResult r;
        r.median_gbps = r.min_gbps = r.max_gbps = backend->measure_read_bandwidth_gbps(probe_bytes, o.bw_passes);
        r.passes = o.bw_passes;
        r.buffer_bytes = probe_bytes;
        return r;
      };
      const JetMoeConfig& cfg = L.files->config;
      // The untimed warm-up decodes kWarmupDecode tokens from the same depth, so the cache holds
      // those too (a -n below it would otherwise overflow the context in the warm-up).
      constexpr int kWarmupDecode = 4;
      const int ctx = o.depth + std::max({o.n_prompt, o.n_gen, o.warmup && o.n_gen > 0 ? kWarmupDecode : 0}) + 1;
      if (ctx > cfg.max_position_embeddings)
        throw CLI::ValidationError("-d/-p/-n", "depth + tokens is longer than the model's context of " +
                                                   std::to_string(cfg.max_position_embeddings));
      Runner run{model, {}, {}, {}, o.depth};
      std::uniform_int_distribution<int32_t> tok(3, cfg.vocab_size - 1);
      run.prompt.resize(static_cast<size_t>(std::max(o.depth + o.n_prompt, 1)));
      run.gen.resize(static_cast<size_t>(std::max(o.n_gen, kWarmupDecode)));
      for (auto& t : run.prompt) t = tok(rng);
      for (auto& t : run.gen) t = tok(rng);
      const size_t bpt = L.files->bytes_per_token();
      const double active = active_weights_per_token(*L.files);
      const size_t model_bytes = L.files->tensors->file_bytes();

      for (const KvCacheTypes& kv : kv_types) {
        model.set_cache_types(kv);
        KvCache cache = model.make_cache(ctx);
        cache.wait_populated();  // no background thread beside the timed runs
        const std::string kv_k = kv_cache_type_name(kv.k), kv_v = kv_cache_type_name(kv.v);
        const std::string kv_name = kv_k + "/" + kv_v;
        // KV cache bytes decode reads per token, averaged over the n decoded tokens (positions
        // depth .. depth+n-1 each read every earlier position of every layer and KV head).
        const double kv_bytes_per_token =
            static_cast<double>(kv_cache_bytes_per_token(cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.kv_channels, kv)) *
            (o.depth + (o.n_gen + 1) / 2.0);
        if (o.depth > 0) {  // once per cache type, with every thread; each test rolls back to it
          omp_set_num_threads(max_threads);
          std::fprintf(stderr, "bench: %s %s: filling the KV cache (%s) to depth %d...\n", L.name.c_str(), L.type.c_str(),
                       kv_name.c_str(), o.depth);
          run.fill_depth(cache);
        }
        for (int nt : threads) {
          omp_set_num_threads(nt);
          const BandwidthResult bw = measure_bw();
          std::fprintf(stderr, "bench: %s %s t=%d: read bandwidth %.1f GB/s (median of %d, %.1f-%.1f%s%s)\n", L.name.c_str(),
                       L.type.c_str(), nt, bw.median_gbps, bw.passes, bw.min_gbps, bw.max_gbps,
                       bw.loop.empty() ? "" : ", loop ", bw.loop.c_str());
          use_prefetch(prefetches[0]);
          if (o.warmup) {  // pages in every expert (a 64-token prompt picks them all) and starts the threads
            if (o.n_prompt > 0) run.prefill(cache, std::min(o.n_prompt, 64));
            if (o.n_gen > 0) run.decode(cache, kWarmupDecode);
          }
          // paired: the probe around each repetition (decode rows; empty for prefill)
          // paired_per_pass_best: the same probes by the tables' estimator before 2026-12-06
          auto emit = [&](const std::string& test, bool decode, int n, const std::vector<double>& samples,
                          const std::vector<double>& paired, const std::vector<double>& paired_per_pass_best, bool busy) {
            const Stats s = summarize(samples);
            nlohmann::ordered_json r;
            r["model"] = L.name;
            r["model_path"] = model_path.empty() ? "(synthetic)" : model_path;
            r["synthetic"] = model_path.empty();
            r["layers"] = cfg.num_hidden_layers;
            r["type"] = L.type;
            r["device"] = backend->name();
            r["model_bytes"] = model_bytes;
            r["load_mode"] = L.load_mode;
            r["threads"] = nt;
            r["cache_type_k"] = kv_k;
            r["cache_type_v"] = kv_v;
            r["test"] = test;
            r["n_tokens"] = n;
            r["n_depth"] = o.depth;
            r["busy_neighbour"] = busy;
            r["decode_prefetch_bytes"] = decode_prefetch_bytes();
            r["decode_prefetch_by_type"] = decode_prefetch_by_type_json();
            r["decode_prefetch_default"] = !decode_prefetch_overridden();
            r["decode_stream"] = decode_stream_summary();
            r["kv_touch_bytes"] = kv_touch_bytes();
            r["kv_row_prefetch"] = kv_row_prefetch_summary();
            r["tokens_per_second"] = {{"median", s.median}, {"min", s.min}, {"max", s.max}, {"mean", s.mean},
                                      {"stddev", s.stddev}, {"samples", s.samples}};
            r["active_weights_per_token"] = active;
            r["gflops_per_second"] = 2.0 * active * s.median / 1e9;
            r["bandwidth_gbps"] = bw.median_gbps;
            r["bandwidth_gbps_max"] = bw.max_gbps;
            if (!bw.loops.empty()) {  // the CPU's probe: which loop counted, and every loop's passes
              r["bandwidth_loop"] = bw.loop;
              r["bandwidth_gbps_per_pass_best"] = bw.per_pass_best_median_gbps;
              nlohmann::ordered_json loops = nlohmann::ordered_json::array();
              for (const BandwidthResult::Loop& l : bw.loops) loops.push_back({{"name", l.name}, {"gbps", l.gbps}});
              r["bandwidth_loops"] = loops;
            }
            if (decode) {  // bytes streamed per token: the weights, plus the KV cache it attends over
              const double streamed = static_cast<double>(bpt) + kv_bytes_per_token;
              r["weight_bytes_per_token"] = bpt;
              r["kv_bytes_per_token"] = kv_bytes_per_token;
              r["achieved_gbps"] = streamed * s.median / 1e9;
              // Each repetition's streamed GB/s over the probes around it.
              const auto ratios_to = [&](const std::vector<double>& probes) {
                std::vector<double> ratios;
                for (size_t i = 0; i < samples.size() && i < probes.size(); ++i)
                  if (probes[i] > 0) ratios.push_back(streamed * samples[i] / 1e9 / probes[i]);
                return summarize(ratios);
              };
              const Stats pb = summarize(paired), rs = ratios_to(paired);
              r["paired_bandwidth_gbps"] = {{"median", pb.median}, {"min", pb.min}, {"max", pb.max}, {"samples", pb.samples}};
              r["bandwidth_ratio"] = rs.median;
              r["bandwidth_ratio_samples"] = rs.samples;
              if (!bw.loops.empty()) {
                const Stats ob = summarize(paired_per_pass_best), orat = ratios_to(paired_per_pass_best);
                r["paired_bandwidth_gbps_per_pass_best"] = {{"median", ob.median}, {"samples", ob.samples}};
                r["bandwidth_ratio_per_pass_best"] = orat.median;
              }
            }
            report["results"].push_back(r);
          };
          // Prefill runs once with the first prefetch value (the kernels prefetch only at one
          // token); decode runs every value, their repetitions interleaved.
          auto repeat = [&](const std::string& test, bool decode, int n, bool busy) {
            const size_t variants = decode ? prefetches.size() : 1;
            std::vector<std::vector<double>> samples(variants), paired(variants), paired_old(variants);
            for (int rep = 0; rep < o.reps; ++rep)
              for (size_t v = 0; v < variants; ++v) {
                use_prefetch(prefetches[v]);
                const BandwidthResult before = decode ? measure_bw() : BandwidthResult{};
                samples[v].push_back(decode ? run.decode(cache, n) : run.prefill(cache, n));
                if (decode) {
                  const BandwidthResult after = measure_bw();
                  paired[v].push_back(0.5 * (before.median_gbps + after.median_gbps));
                  paired_old[v].push_back(0.5 * (before.per_pass_best_median_gbps + after.per_pass_best_median_gbps));
                }
                std::fprintf(stderr, "bench: %s %s kv %s t=%d %s%s rep %d/%d: %.2f tok/s%s\n", L.name.c_str(), L.type.c_str(),
                             kv_name.c_str(), nt, test.c_str(), decode && sweep_prefetch ? (" prefetch " + prefetch_label(prefetches[v])).c_str() : "",
                             rep + 1, o.reps, samples[v].back(),
                             decode ? fmt(" (read probe around it %.1f GB/s)", paired[v].back()).c_str() : "");
              }
            for (size_t v = 0; v < variants; ++v) {
              use_prefetch(prefetches[v]);  // the row records the distances its repetitions used
              emit(test, decode, n, samples[v], paired[v], paired_old[v], busy);
            }
            use_prefetch(prefetches[0]);
          };
          const std::string at = o.depth > 0 ? " @ d" + std::to_string(o.depth) : "";
          if (o.n_prompt > 0) repeat("pp" + std::to_string(o.n_prompt) + at, false, o.n_prompt, false);
          if (o.n_gen > 0) repeat("tg" + std::to_string(o.n_gen) + at, true, o.n_gen, false);
          if (o.busy && o.n_gen > 0 && nt == max_threads) {
            BusyNeighbour neighbour;
            std::fprintf(stderr, "bench: busy neighbour process spinning on cpu %d\n", neighbour.cpu());
            repeat("tg" + std::to_string(o.n_gen) + at + "-busy", true, o.n_gen, true);
          }
        }
      }
    }
  }

  if (!o.json_file.empty()) {
    write_file_atomic(o.json_file, report.dump(2) + "\n");
  }
  if (o.json) {
    std::cout << report.dump(2) << "\n";
    return;
  }
  std::printf("| model | type | kv | load | threads | test | t/s median | min-max | GFLOP/s | weights/token | KV/token | GB/s | read BW GB/s | of BW |\n");
  std::printf("| --- | --- | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
  for (const auto& r : report["results"]) {
    const auto& t = r["tokens_per_second"];
    const bool decode = r.contains("weight_bytes_per_token");
    std::printf("| %s | %s | %s | %s | %d | %s | %.2f | %.2f-%.2f | %s | %s | %s | %s | %.1f | %s |\n",
                r["model"].get<std::string>().c_str(), r["type"].get<std::string>().c_str(),
                (r["cache_type_k"].get<std::string>() + "/" + r["cache_type_v"].get<std::string>()).c_str(),
                r["load_mode"].get<std::string>().c_str(), r["threads"].get<int>(),
                (r["test"].get<std::string>() + (decode && sweep_prefetch ? ", prefetch " + (r["decode_prefetch_default"].get<bool>() ? std::string("default") : std::to_string(r["decode_prefetch_bytes"].get<size_t>())) : "")).c_str(),
                t["median"].get<double>(), t["min"].get<double>(), t["max"].get<double>(),
                decode ? "-" : fmt("%.1f", r["gflops_per_second"].get<double>()).c_str(),
                decode ? bytes_text(r["weight_bytes_per_token"].get<double>()).c_str() : "-",
                decode ? bytes_text(r["kv_bytes_per_token"].get<double>()).c_str() : "-",
                decode ? fmt("%.1f", r["achieved_gbps"].get<double>()).c_str() : "-",
                decode ? r["paired_bandwidth_gbps"]["median"].get<double>() : r["bandwidth_gbps"].get<double>(),
                decode ? fmt("%.0f%%", 100.0 * r["bandwidth_ratio"].get<double>()).c_str() : "-");
  }
  if (on_gpu)
    std::printf("\ndevice %s: weights in device memory; read bandwidth: a streaming read of %.2f GiB of device memory, median of %d passes\n",
                report.value("backend", device).c_str(), o.bw_gib, o.bw_passes);
  std::printf("\nbuilt with %s\n", build_summary().c_str());
  std::printf("\nisa %s, decode prefetch %s (int8/int4 streams: %s; KV rows %s, touched every %zu bytes, 0 = none), OMP_WAIT_POLICY=%s, OpenBLAS core %s, read bandwidth: streaming sum over %.2f GiB (huge pages), median of %d passes of the read loop with the highest median "
              "(decode rows: the probes around each repetition, and of BW = median of the per-repetition ratios)\n",
              report["isa"].get<std::string>().c_str(), report["decode_prefetch"].get<std::string>().c_str(),
              report["decode_stream"].get<std::string>().c_str(), report["kv_row_prefetch"].get<std::string>().c_str(),
              report["kv_touch_bytes"].get<size_t>(),
              wait_policy ? wait_policy : "(unset)",
              report["openblas_core"].get<std::string>().c_str(), o.bw_gib, o.bw_passes);
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* sub = app.add_subcommand("bench", "Prefill (pp) and decode (tg) speed, with the memory bandwidth measured in the same run");
  sub->add_option("-m,--model", o->models, "Checkpoint folder(s), repeatable or comma-separated (default: the bundled model unless --synth)");
  sub->add_flag("--synth", o->synth, "Benchmark a random-weight model with JetMoE-8B's shapes, built in memory");
  sub->add_flag("--gguf-layout", o->gguf_layout,
                "Keep the --synth model's quantized weights in the GGUF block layout, the one a mmapped .gguf file runs, instead of "
                "repacking them for this CPU's kernels");
  sub->add_option("--layers", o->layers, "Layers of the --synth model (JetMoE-8B has 24; full width either way)")
      ->check(CLI::Range(1, 24));
  sub->add_option("-t,--threads", o->threads, "Thread counts, comma-separated (default: all cores)");
  sub->add_option("--quant", o->quants,
                  "Weight types, comma-separated: none (the checkpoint's own weights; bf16 for --synth), q8_0, q4_0, q4_k, "
                  "q4_0-pure, q4_k-pure; f32, bf16, f16 for --synth");
  sub->add_option("-p,--n-prompt", o->n_prompt, "Prompt tokens of the prefill test (0: skip)")->check(CLI::Range(0, 4096));
  sub->add_option("-n,--n-gen", o->n_gen, "Tokens of the decode test (0: skip)")->check(CLI::Range(0, 4096));
  const std::string kv_help = " (comma-separated, paired in order with the other list: f32, f16, bf16, q8_0)";
  sub->add_option("--cache-type-k", o->cache_types_k, "KV cache types for keys (also -ctk)" + kv_help)->capture_default_str();
  sub->add_option("--cache-type-v", o->cache_types_v, "KV cache types for values (also -ctv)" + kv_help)->capture_default_str();
  sub->add_option("-d,--n-depth", o->depth, "Tokens already in the KV cache when each test starts (filled once by a real prefill)")
      ->check(CLI::Range(0, 65536));
  sub->add_option("-r,--repetitions", o->reps, "Timed repetitions of each test")->check(CLI::Range(1, 1000));
  sub->add_flag("--no-mmap", o->no_mmap, "Read checkpoint weights into RAM instead of mmapping them");
  sub->add_flag("--mlock", o->mlock, "mmap checkpoint weights and lock them in RAM");
  sub->add_flag("--busy", o->busy, "Add a decode row at the largest thread count with another process spinning on one core");
  sub->add_flag("!--no-warmup", o->warmup, "Skip the untimed warm-up run");
  sub->add_option("--bw-gib", o->bw_gib, "Size of the read-bandwidth probe buffer in GiB (far above the caches)")
      ->check(CLI::Range(0.01, 64.0));
  sub->add_option("--seed", o->seed, "Seed of the random tokens and synthetic weights");
  sub->add_flag("--json", o->json, "Print one JSON object instead of the markdown table");
  sub->add_option("--json-file", o->json_file, "Also write the JSON object to this file");
  sub->add_option("--prefetch", o->prefetch,
                  "Decode prefetch distances in bytes to compare, comma-separated, e.g. 0,4096: one decode row each, repetitions "
                  "interleaved; a number applies to every weight type but GGUF-layout Q8_0 / Q4_0 (those kernels ask for every line 4096 ahead into L1), \"default\" is this CPU's settings (JETMOE_PREFETCH, or 8192 on "
                  "Intel, where an Ice Lake Xeon's interleaved int8/int4 kernels and attention's KV rows prefetch 4096 into L1 alone; elsewhere 8192 for interleaved Q4_K and Q8_0 and 4096 for Q4_0 weights, 8192 for GGUF-layout Q4_K with the AVX2 kernels, 0 for the rest; each with a second prefetch into "
                  "L1 at half the distance, or for Q8_0 / Q4_0 off Intel one line loaded 2 / 1 KiB ahead every ~2 KiB; off Intel the int8/int4 "
                  "kernels' rolled loops and attention's touches of its KV rows, and where the AVX2 kernels run off Intel, Q8_0 / Q4_0 / "
                  "interleaved Q4_K read as two streams per thread with no L2 prefetch, Q4_0 1 KiB ahead into L1), which is also what runs without the option");
  sub->add_option("--device", o->device, "Run on cpu or cuda (a CUDA build without a usable GPU falls back to the CPU, saying so)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  sub->callback([o] { run_bench(*o); });
}

}  // namespace jetmoe::cli
