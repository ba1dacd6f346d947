// `jetmoe score` batch mode end to end: JSONL out, bad records, pairs, kill-and-resume, and
// shard + score-merge equal to one unsharded run.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "support/test_paths.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using jetmoe::test::run_command;

namespace {

std::string bin() { return jetmoe::test::jetmoe_binary(); }
// Appended rather than "'" + p.string() + "'": GCC 12 warns -Wrestrict (a false positive) where
// a C string is inserted at the front of a temporary std::string (operator+(const char*, string&&)).
std::string q(const fs::path& p) {
  std::string s = "'";
  s += p.string();
  s += '\'';
  return s;
}

std::vector<nlohmann::json> read_jsonl(const fs::path& p) {
  std::vector<nlohmann::json> out;
  std::ifstream in(p);
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

// The first n non-empty lines of the held-out novel: real text, one document per line.
fs::path heldout_lines(const fs::path& dir, int n) {
  std::ifstream in(jetmoe::test::test_data_dir() / "heldout-persuasion.txt");
  const fs::path p = dir / "docs.txt";
  std::ofstream out(p);
  std::string line;
  for (int i = 0; i < n && std::getline(in, line);)
    if (!line.empty()) out << line << "\n", ++i;
  return p;
}

void expect_same_records(const std::vector<nlohmann::json>& a, const std::vector<nlohmann::json>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i]["index"], b[i]["index"]);
    EXPECT_EQ(a[i]["id"], b[i]["id"]);
    EXPECT_EQ(a[i]["n_tokens"], b[i]["n_tokens"]);
    // Batches are packed differently, so float sums may differ in the last bits.
    EXPECT_NEAR(a[i]["sum_logprob"].get<double>(), b[i]["sum_logprob"].get<double>(), 1e-3) << i;
  }
}

TEST(ScoreCli, DocumentsMatchTheMachineInterface) {
  const fs::path dir = jetmoe::test::make_temp_dir("score-docs");
  std::ofstream(dir / "in.txt") << "It is a truth universally acknowledged.\nEmma was handsome.\n";
  std::string out;
  ASSERT_EQ(run_command(bin() + " score " + q(dir / "in.txt") + " -o " + q(dir / "out.jsonl") + " --summary " +
                            q(dir / "sum.json") + " --per-token 2>/dev/null",
                        &out),
            0);
  const auto recs = read_jsonl(dir / "out.jsonl");
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[0]["id"], 1);
  // The same text through the single-sequence interface gives the same numbers.
  ASSERT_EQ(run_command(bin() + " score -p 'It is a truth universally acknowledged.' --format json", &out), 0);
  const auto single = nlohmann::json::parse(out);
  EXPECT_NEAR(recs[0]["sum_logprob"].get<double>(), single["sum_logprob"].get<double>(), 1e-4);
  const auto lps = recs[0]["token_logprobs"].get<std::vector<double>>();
  const auto want = single["token_logprobs"].get<std::vector<double>>();
  ASSERT_EQ(lps.size(), want.size());
  for (size_t i = 0; i < lps.size(); ++i) EXPECT_NEAR(lps[i], want[i], 1e-4);
  // The summary sums NLL and tokens.
  const auto sum = jetmoe::test::read_json(dir / "sum.json");
  const double nll = -(recs[0]["sum_logprob"].get<double>() + recs[1]["sum_logprob"].get<double>());
  const int64_t n = recs[0]["n_tokens"].get<int64_t>() + recs[1]["n_tokens"].get<int64_t>();
  EXPECT_EQ(sum["n_tokens"].get<int64_t>(), n);
  EXPECT_NEAR(sum["perplexity"].get<double>(), std::exp(nll / static_cast<double>(n)), 1e-6 * std::exp(nll / n));
}

TEST(ScoreCli, BadRecordsAreSkippedCountedOrStrict) {
  const fs::path dir = jetmoe::test::make_temp_dir("score-bad");
  {
    std::ofstream f(dir / "in.jsonl", std::ios::binary);
    f << "{\"text\": \"A fine morning.\", \"id\": \"a\"}\n";
    f << "not json\n";
    f << "{\"other\": 1}\n";
    f << "\n";
    f << "{\"text\": \"bad \xff\xfe bytes\"}\n";
    f << "{\"text\": \"Another fine morning.\", \"id\": \"f\"}\n";
  }
  std::string err;
  ASSERT_EQ(run_command(bin() + " score " + q(dir / "in.jsonl") + " -o " + q(dir / "out.jsonl") + " --summary " + q(dir / "s.json") +
                            " 2>&1 >/dev/null",
                        &err),
            0);
  const auto recs = read_jsonl(dir / "out.jsonl");
  ASSERT_EQ(recs.size(), 6u);
  EXPECT_EQ(recs[0]["id"], "a");
  EXPECT_FALSE(recs[0].value("skipped", false));
  for (int i : {1, 2, 3, 4}) EXPECT_TRUE(recs[static_cast<size_t>(i)].value("skipped", false)) << i;
  EXPECT_THAT(recs[1]["error"].get<std::string>(), HasSubstr("JSON"));
  EXPECT_THAT(recs[2]["error"].get<std::string>(), HasSubstr("'text'"));
  EXPECT_THAT(recs[4]["error"].get<std::string>(), HasSubstr("UTF-8"));
  EXPECT_EQ(recs[5]["id"], "f");
  EXPECT_THAT(err, HasSubstr("skipped"));
  const auto s = jetmoe::test::read_json(dir / "s.json");
  EXPECT_EQ(s["skipped"], 4);
  EXPECT_EQ(s["scored"], 2);
  // --strict stops at the first bad record with a non-zero exit.
  EXPECT_NE(run_command(bin() + " score " + q(dir / "in.jsonl") + " --strict > /dev/null 2>&1", nullptr), 0);
  // Unreadable input: a clear message.
  ASSERT_NE(run_command(bin() + " score /nonexistent/in.txt 2>&1", &err), 0);
  EXPECT_THAT(err, HasSubstr("/nonexistent/in.txt"));
}

TEST(ScoreCli, PairsGiveContinuationLogLikelihoodAndGreedyFlag) {
  const fs::path dir = jetmoe::test::make_temp_dir("score-pairs");
  const auto g = jetmoe::test::read_json(jetmoe::test::austen_model_dir() / "golden.json")["greedy"][0];
  const std::string greedy_text = g["generated_text"].get<std::string>().substr(0, 14);  // ". I should not"
  {
    std::ofstream f(dir / "pairs.jsonl");
    f << nlohmann::json{{"context", g["prompt"]}, {"continuation", greedy_text}}.dump() << "\n";
    f << nlohmann::json{{"context", g["prompt"]}, {"continuation", " banana pudding"}}.dump() << "\n";
  }
  ASSERT_EQ(run_command(bin() + " score --pairs " + q(dir / "pairs.jsonl") + " -o " + q(dir / "out.jsonl") + " 2>/dev/null", nullptr), 0);
  const auto recs = read_jsonl(dir / "out.jsonl");
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_TRUE(recs[0]["is_greedy"].get<bool>());
  EXPECT_FALSE(recs[1]["is_greedy"].get<bool>());
  EXPECT_GT(recs[0]["logprob"].get<double>(), recs[1]["logprob"].get<double>());
}

TEST(ScoreCli, KilledRunResumesWithoutDuplicatesOrGaps) {
  const fs::path dir = jetmoe::test::make_temp_dir("score-resume");
  const fs::path in = heldout_lines(dir, 240);
  ASSERT_EQ(run_command(bin() + " score " + q(in) + " -o " + q(dir / "ref.jsonl") + " 2>/dev/null", nullptr), 0);
  // Kill -9 once some records are on disk (one thread and small batches keep it slow enough).
  const fs::path out = dir / "out.jsonl";
  const std::string partial = (dir / "out.jsonl.partial").string();
  std::string script = "(";  // appended, not "(" + ...: see q()
  script += bin() + " score " + q(in) + " -o " + q(out) + " -t 1 -b 64 2>/dev/null & pid=$!; " +
            "for i in $(seq 1 600); do n=$(cat '" + partial + "' 2>/dev/null | wc -l); " +
            "[ \"$n\" -ge 40 ] && break; sleep 0.02; done; kill -9 $pid; wait $pid 2>/dev/null; true)";
  ASSERT_EQ(run_command(script, nullptr), 0);
  ASSERT_FALSE(fs::exists(out)) << "the run finished before it was killed; the test did not test resuming";
  ASSERT_TRUE(fs::exists(partial));
  const size_t before = read_jsonl(partial).size();
  EXPECT_GE(before, 40u);
  EXPECT_LT(before, 240u);
  // Without --resume, the partial file is not silently overwritten.
  std::string err;
  EXPECT_NE(run_command(bin() + " score " + q(in) + " -o " + q(out) + " 2>&1", &err), 0);
  EXPECT_THAT(err, HasSubstr("--resume"));
  ASSERT_EQ(run_command(bin() + " score " + q(in) + " -o " + q(out) + " --resume 2>&1", &err), 0);
  EXPECT_THAT(err, HasSubstr("resuming"));
  EXPECT_FALSE(fs::exists(partial));
  expect_same_records(read_jsonl(out), read_jsonl(dir / "ref.jsonl"));
}

TEST(ScoreCli, ShardsMergeToTheUnshardedRun) {
  const fs::path dir = jetmoe::test::make_temp_dir("score-shards");
  const fs::path in = heldout_lines(dir, 60);
  ASSERT_EQ(run_command(bin() + " score " + q(in) + " -o " + q(dir / "all.jsonl") + " --summary " + q(dir / "all.json") + " 2>/dev/null",
                        nullptr),
            0);
  std::string shards;
  for (int i = 0; i < 3; ++i) {
    const fs::path o = dir / ("shard" + std::to_string(i) + ".jsonl");
    // Shard 1 takes its index from the Slurm array variables, the others from flags.
    const std::string sel = i == 1 ? "SLURM_ARRAY_TASK_COUNT=3 SLURM_ARRAY_TASK_ID=1 " + bin() + " score "
                                   : bin() + " score --num-shards 3 --shard-index " + std::to_string(i) + " ";
    ASSERT_EQ(run_command(sel + q(in) + " -o " + q(o) + " 2>/dev/null", nullptr), 0) << i;
    EXPECT_EQ(read_jsonl(o).size(), 20u);
    shards += ' ';
    shards += q(o);
  }
  ASSERT_EQ(run_command(bin() + " score-merge" + shards + " -o " + q(dir / "merged.jsonl") + " --summary " + q(dir / "merged.json") +
                            " 2>/dev/null",
                        nullptr),
            0);
  expect_same_records(read_jsonl(dir / "merged.jsonl"), read_jsonl(dir / "all.jsonl"));
  const auto a = jetmoe::test::read_json(dir / "all.json"), m = jetmoe::test::read_json(dir / "merged.json");
  EXPECT_EQ(a["n_tokens"], m["n_tokens"]);
  EXPECT_NEAR(a["perplexity"].get<double>(), m["perplexity"].get<double>(), 1e-6 * a["perplexity"].get<double>());
  // A missing shard is reported, not merged into a silently partial result.
  std::string err;
  EXPECT_NE(run_command(bin() + " score-merge " + q(dir / "shard0.jsonl") + " " + q(dir / "shard2.jsonl") + " 2>&1 >/dev/null", &err), 0);
  EXPECT_THAT(err, HasSubstr("missing"));
}

}  // namespace
