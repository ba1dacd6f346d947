// `jetmoe bench` end to end on a golden checkpoint, tiny and once, so the tool does not rot. The
// figures themselves are never checked (benchmarks are not tests); the JSON fields are.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "runtime/build_info.h"
#include "support/test_paths.h"

namespace fs = std::filesystem;
using jetmoe::test::run_command;

namespace {

const fs::path kTiny = fs::path(JETMOE_GOLDEN_DIR) / "jetmoe-tiny-a-f32";

nlohmann::json run_bench(const std::string& args) {
  std::string out;
  const int rc = run_command(jetmoe::test::jetmoe_binary() + " bench " + args + " --json 2>/dev/null", &out);
  EXPECT_EQ(rc, 0) << out;
  return rc == 0 ? nlohmann::json::parse(out) : nlohmann::json::object();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// The read probe's figure is the median of its fastest loop (by median), recomputed here from
// every loop's passes; the per-pass maximum's median (the estimator before 2026-12-06) too.
void check_probe_summary(const nlohmann::json& r) {
  ASSERT_TRUE(r.contains("bandwidth_loops")) << r.dump(1);
  const auto& loops = r["bandwidth_loops"];
  ASSERT_GE(loops.size(), 1u);
  const size_t passes = loops[0]["gbps"].size();
  ASSERT_GE(passes, 1u);
  double best = -1;
  std::string best_name;
  std::vector<double> per_pass_max(passes, 0.0);
  for (const auto& l : loops) {
    const auto g = l["gbps"].get<std::vector<double>>();
    ASSERT_EQ(g.size(), passes) << l["name"];
    const double m = median(g);
    if (m > best) {
      best = m;
      best_name = l["name"];
    }
    for (size_t i = 0; i < passes; ++i) per_pass_max[i] = std::max(per_pass_max[i], g[i]);
  }
  EXPECT_DOUBLE_EQ(r["bandwidth_gbps"].get<double>(), best);
  EXPECT_EQ(r["bandwidth_loop"], best_name);
  EXPECT_DOUBLE_EQ(r["bandwidth_gbps_per_pass_best"].get<double>(), median(per_pass_max));
  EXPECT_LE(r["bandwidth_gbps"].get<double>(), r["bandwidth_gbps_per_pass_best"].get<double>());
}

TEST(BenchSmoke, GoldenCheckpointJsonFields) {
  ASSERT_TRUE(fs::exists(kTiny / "config.json")) << kTiny;
  const auto j = run_bench("-m '" + kTiny.string() + "' -r 1 -p 8 -n 4 -t 1,2 --bw-gib 0.0201 --busy");  // 0.0201: an odd number of lines per thread at 2
  ASSERT_TRUE(j.contains("results"));
  EXPECT_EQ(j["n_prompt"], 8);
  EXPECT_EQ(j["n_gen"], 4);
  EXPECT_EQ(j["repetitions"], 1);
  EXPECT_TRUE(j.contains("isa"));
  ASSERT_TRUE(j.contains("build")) << j.dump(1);
  EXPECT_EQ(j["build"]["compiler"], jetmoe::build_info().compiler);
  EXPECT_EQ(j["build"]["build_type"], jetmoe::build_info().build_type);
  EXPECT_EQ(j["build"]["kernels_o3"], jetmoe::build_info().kernels_o3);
  const auto& rs = j["results"];
  // pp8 and tg4 at 1 and 2 threads, plus the busy-neighbour decode at 2.
  ASSERT_EQ(rs.size(), 5u) << rs.dump(1);
  int busy = 0;
  for (const auto& r : rs) {
    EXPECT_EQ(r["model"], "jetmoe-tiny-a-f32");
    EXPECT_EQ(r["type"], "f32");
    EXPECT_EQ(r["load_mode"], "mmap");
    EXPECT_FALSE(r["synthetic"].get<bool>());
    const auto& t = r["tokens_per_second"];
    EXPECT_GT(t["median"].get<double>(), 0.0);
    EXPECT_LE(t["min"].get<double>(), t["median"].get<double>());
    EXPECT_GE(t["max"].get<double>(), t["median"].get<double>());
    EXPECT_EQ(t["samples"].size(), 1u);
    EXPECT_GT(r["bandwidth_gbps"].get<double>(), 0.0);
    check_probe_summary(r);
    const std::string test = r["test"];
    if (test == "pp8") {
      EXPECT_EQ(r["n_tokens"], 8);
      EXPECT_GT(r["gflops_per_second"].get<double>(), 0.0);
      EXPECT_FALSE(r.contains("bandwidth_ratio"));
    } else {
      ASSERT_TRUE(test == "tg4" || test == "tg4-busy") << test;
      EXPECT_EQ(r["n_tokens"], 4);
      EXPECT_GT(r["weight_bytes_per_token"].get<double>(), 0.0);
      EXPECT_GT(r["achieved_gbps"].get<double>(), 0.0);
      EXPECT_GT(r["bandwidth_ratio"].get<double>(), 0.0);
      // One read probe around each repetition, and the ratio is that repetition's against it.
      ASSERT_EQ(r["paired_bandwidth_gbps"]["samples"].size(), 1u);
      const double paired = r["paired_bandwidth_gbps"]["samples"][0].get<double>();
      EXPECT_GT(paired, 0.0);
      ASSERT_EQ(r["bandwidth_ratio_samples"].size(), 1u);
      const double streamed = r["weight_bytes_per_token"].get<double>() + r["kv_bytes_per_token"].get<double>();
      EXPECT_NEAR(r["bandwidth_ratio"].get<double>(), streamed * t["median"].get<double>() / 1e9 / paired,
                  1e-9 * r["bandwidth_ratio"].get<double>());
      // The same repetition against the estimator before 2026-12-06, never below the new one.
      ASSERT_EQ(r["paired_bandwidth_gbps_per_pass_best"]["samples"].size(), 1u);
      const double paired_old = r["paired_bandwidth_gbps_per_pass_best"]["samples"][0].get<double>();
      EXPECT_GE(paired_old, paired);
      EXPECT_NEAR(r["bandwidth_ratio_per_pass_best"].get<double>(), streamed * t["median"].get<double>() / 1e9 / paired_old,
                  1e-9 * r["bandwidth_ratio"].get<double>());
      if (test == "tg4-busy") {
        ++busy;
        EXPECT_TRUE(r["busy_neighbour"].get<bool>());
        EXPECT_EQ(r["threads"], 2);
      }
    }
  }
  EXPECT_EQ(busy, 1);
}

TEST(BenchSmoke, LoadModeAndQuantAreReported) {
  const auto j = run_bench("-m '" + kTiny.string() + "' -r 1 -p 4 -n 2 -t 1 --bw-gib 0.02 --no-mmap --quant none,q8_0");
  ASSERT_EQ(j["results"].size(), 4u);
  EXPECT_EQ(j["results"][0]["type"], "f32");
  EXPECT_EQ(j["results"][0]["load_mode"], "read (--no-mmap)");
  EXPECT_EQ(j["results"][2]["type"], "q8_0");
  EXPECT_EQ(j["results"][2]["load_mode"], "memory (quantized at load)");
  // 8-bit weights: fewer bytes per decoded token than float32.
  EXPECT_LT(j["results"][3]["weight_bytes_per_token"].get<double>(), j["results"][1]["weight_bytes_per_token"].get<double>());
}

TEST(BenchSmoke, KvCacheTypesAndDepth) {
  const auto j = run_bench("-m '" + kTiny.string() + "' -r 1 -p 4 -n 2 -t 1 --bw-gib 0.02 -ctk f32,f16 -ctv f32,bf16 -d 8");
  const auto& rs = j["results"];
  ASSERT_EQ(rs.size(), 4u) << rs.dump(1);
  EXPECT_EQ(rs[0]["test"], "pp4 @ d8");
  EXPECT_EQ(rs[1]["test"], "tg2 @ d8");
  EXPECT_EQ(rs[1]["n_depth"], 8);
  EXPECT_EQ(rs[1]["cache_type_k"], "f32");
  EXPECT_EQ(rs[3]["cache_type_k"], "f16");
  EXPECT_EQ(rs[3]["cache_type_v"], "bf16");
  // Decode reads every earlier key and value row of every layer and KV head: on average
  // depth + (n + 1) / 2 = 9.5 positions; f16/bf16 rows are half the bytes of f32 rows.
  const auto cfg = jetmoe::test::read_json(kTiny / "config.json");
  const double rows = cfg["num_hidden_layers"].get<double>() * cfg["num_key_value_heads"].get<double>() * 9.5;
  const double d = cfg["kv_channels"].get<double>();
  EXPECT_DOUBLE_EQ(rs[1]["kv_bytes_per_token"].get<double>(), rows * 2 * d * 4);
  EXPECT_DOUBLE_EQ(rs[3]["kv_bytes_per_token"].get<double>(), rows * 2 * d * 2);
  std::string out;
  EXPECT_NE(run_command(jetmoe::test::jetmoe_binary() + " bench -m '" + kTiny.string() + "' -ctk f32,f16,bf16 -ctv f32,f16", &out, true), 0);
  EXPECT_THAT(out, ::testing::HasSubstr("-ctk/-ctv"));
}

TEST(BenchSmoke, PrefetchSweepGivesOneDecodeRowPerDistance) {
  const auto j = run_bench("-m '" + kTiny.string() + "' -r 2 -p 4 -n 2 -t 1 --bw-gib 0.02 --quant q4_0 --prefetch 0,4096");
  const auto& rs = j["results"];
  ASSERT_EQ(rs.size(), 3u) << rs.dump(1);  // pp4 once, tg2 per distance
  EXPECT_EQ(rs[0]["test"], "pp4");
  EXPECT_EQ(rs[1]["test"], "tg2");
  EXPECT_EQ(rs[1]["decode_prefetch_bytes"], 0);
  EXPECT_EQ(rs[2]["test"], "tg2");
  EXPECT_EQ(rs[2]["decode_prefetch_bytes"], 4096);
  // A distance given applies to every weight type, those with defaults of their own included.
  for (const char* t : {"F32", "F16", "BF16", "Q4_K", "Q8_0R", "Q4_0R", "Q4_KR"}) {
    EXPECT_EQ(rs[1]["decode_prefetch_by_type"][t], 0) << t;
    EXPECT_EQ(rs[2]["decode_prefetch_by_type"][t], 4096) << t;
  }
  EXPECT_EQ(rs[1]["decode_prefetch_default"], false);
  for (size_t i = 1; i < 3; ++i) EXPECT_EQ(rs[i]["tokens_per_second"]["samples"].size(), 2u);
  EXPECT_TRUE(j.contains("decode_prefetch_bytes"));
  EXPECT_TRUE(j.contains("decode_prefetch_by_type"));
}

TEST(BenchSmoke, PrefetchDefaultIsAValueToCompare) {
  // "default" = this CPU's per-type settings, beside a distance for every type.
  const auto j = run_bench("-m '" + kTiny.string() + "' -r 1 -p 4 -n 2 -t 1 --bw-gib 0.02 --prefetch default,64");
  const auto& rs = j["results"];
  ASSERT_EQ(rs.size(), 3u) << rs.dump(1);  // pp4 once, tg2 per value
  EXPECT_EQ(rs[1]["decode_prefetch_default"], true);
  EXPECT_EQ(rs[1]["decode_prefetch_by_type"], j["decode_prefetch_by_type"]);  // the run's own defaults
  EXPECT_EQ(rs[2]["decode_prefetch_default"], false);
  EXPECT_EQ(rs[2]["decode_prefetch_by_type"]["Q4_KR"], 64);
  // Attention's KV touches belong to the defaults off Intel; a distance given turns them off.
  EXPECT_EQ(rs[1]["kv_touch_bytes"], j["kv_touch_bytes"]);
  EXPECT_EQ(rs[1]["kv_touch_bytes"], j["cpu_vendor"] == "GenuineIntel" ? 0 : 1024) << j["cpu_vendor"];
  EXPECT_EQ(rs[2]["kv_touch_bytes"], 0);
  // So does the KV rows' own prefetch plan: a distance given is their L2 distance.
  EXPECT_EQ(rs[1]["kv_row_prefetch"], j["kv_row_prefetch"]);
  EXPECT_EQ(rs[2]["kv_row_prefetch"], "L2 64 L1 0");
}

TEST(BenchSmoke, DecodeShorterThanTheWarmupRuns) {
  // The warm-up decodes 4 tokens: -n 1 with no prompt must still fit its context.
  const auto j = run_bench("-m '" + kTiny.string() + "' -r 1 -p 0 -n 1 -t 1 --bw-gib 0.02");
  const auto& rs = j["results"];
  ASSERT_EQ(rs.size(), 1u) << rs.dump(1);
  EXPECT_EQ(rs[0]["test"], "tg1");
  EXPECT_GT(rs[0]["tokens_per_second"]["median"].get<double>(), 0.0);
}

TEST(BenchSmoke, BadArgumentsFailCleanly) {
  std::string out;
  EXPECT_NE(run_command(jetmoe::test::jetmoe_binary() + " bench -m '" + kTiny.string() + "' --quant q9_9", &out, true), 0);
  EXPECT_THAT(out, ::testing::HasSubstr("q9_9"));
  EXPECT_NE(run_command(jetmoe::test::jetmoe_binary() + " bench -m '" + kTiny.string() + "' --quant bf16", &out, true), 0);
  EXPECT_THAT(out, ::testing::HasSubstr("--synth"));
  EXPECT_NE(run_command(jetmoe::test::jetmoe_binary() + " bench -m '" + kTiny.string() + "' -t 0", &out, true), 0);
  EXPECT_NE(run_command(jetmoe::test::jetmoe_binary() + " bench -m '" + kTiny.string() + "' --prefetch 0,100", &out, true), 0);
  EXPECT_THAT(out, ::testing::HasSubstr("--prefetch"));
  EXPECT_NE(run_command("JETMOE_PREFETCH=4k " + jetmoe::test::jetmoe_binary() + " inspect -m '" + kTiny.string() + "'", &out, true), 0);
  EXPECT_THAT(out, ::testing::HasSubstr("JETMOE_PREFETCH='4k'"));
  EXPECT_NE(run_command(jetmoe::test::jetmoe_binary() + " bench -m '" + kTiny.string() + "' --gguf-layout", &out, true), 0);
  EXPECT_THAT(out, ::testing::HasSubstr("--gguf-layout"));
}

}  // namespace
