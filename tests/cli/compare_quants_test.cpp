// compare-quants on the bundled real model and its held-out text: the quality targets of each
// level, and the table's machine-readable forms.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "support/test_paths.h"

using jetmoe::test::run_command;

namespace {

TEST(CompareQuants, BundledModelMeetsQualityTargets) {
  const auto dir = jetmoe::test::make_temp_dir("cq");
  const std::string text = (jetmoe::test::test_data_dir() / "heldout-persuasion.txt").string();
  std::string out;
  ASSERT_EQ(run_command(jetmoe::test::jetmoe_binary() + " compare-quants -f '" + text +
                            "' --chunks 12 --decode-tokens 8 --json --csv '" + (dir / "q.csv").string() + "' --plot '" +
                            (dir / "q.svg").string() + "' 2>/dev/null",
                        &out),
            0);
  const auto j = nlohmann::json::parse(out);
  ASSERT_EQ(j["levels"].size(), 4u);  // reference + q8_0, q4_0, q4_k
  EXPECT_EQ(j["scored_tokens"], 12 * 128);
  std::map<std::string, nlohmann::json> by;
  for (const auto& l : j["levels"]) by[l["type"]] = l;
  // The reference run reproduces golden.json's perplexity windows (first 12 of its 24 windows
  // here, so only sanity-check the range).
  EXPECT_GT(by["BF16"]["ppl"].get<double>(), 50);
  EXPECT_LT(by["q8_0"]["kld_mean"].get<double>(), 0.002);
  EXPECT_GT(by["q8_0"]["same_top_pct"].get<double>(), 97.0);
  EXPECT_LT(by["q4_k"]["kld_mean"].get<double>(), 0.03);
  EXPECT_LT(by["q4_0"]["kld_mean"].get<double>(), 0.03);
  for (const char* t : {"q8_0", "q4_0", "q4_k"}) {
    EXPECT_GT(by[t]["expert_agree_pct"].get<double>(), 90.0) << t;
    EXPECT_LE(by[t]["expert_agree_pct"].get<double>(), 100.0) << t;
    EXPECT_LT(by[t]["weights_bytes"].get<double>(), by["BF16"]["weights_bytes"].get<double>()) << t;
    EXPECT_GT(by[t]["decode_tps"].get<double>(), 0) << t;
  }
  EXPECT_LT(by["q4_k"]["weights_bytes"].get<double>(), by["q8_0"]["weights_bytes"].get<double>());
  std::ifstream csv(dir / "q.csv");
  std::string header;
  std::getline(csv, header);
  EXPECT_THAT(header, ::testing::StartsWith("type,weights_bytes"));
  std::ifstream svg(dir / "q.svg");
  std::string first;
  std::getline(svg, first);
  EXPECT_THAT(first, ::testing::StartsWith("<svg"));
  // Only SVG plots are written.
  EXPECT_NE(run_command(jetmoe::test::jetmoe_binary() + " compare-quants -f '" + text + "' --plot x.png 2>/dev/null", nullptr), 0);
}

}  // namespace
