// The jetmoe binary end to end: the machine interface against the goldens, --help everywhere,
// and bad input giving one clear message and a non-zero exit (never a crash).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "runtime/backend.h"
#include "runtime/build_info.h"
#include "support/test_paths.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using jetmoe::test::run_command;

namespace {

std::string bin() { return jetmoe::test::jetmoe_binary(); }

std::string join(const std::vector<int32_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) {  // (appended piece by piece: GCC 12 warns falsely on "," + string&&)
    if (i) s += ',';
    s += std::to_string(v[i]);
  }
  return s;
}

std::string q(const fs::path& p) { return std::string("'").append(p.string()).append("'"); }

TEST(Cli, HelpOnEverySubcommand) {
  std::string out;
  ASSERT_EQ(run_command(bin() + " --help", &out), 0);
  for (const char* sub : {"generate", "score", "tokenize", "inspect"}) {
    EXPECT_THAT(out, HasSubstr(sub));
    std::string sub_out;
    EXPECT_EQ(run_command(bin() + " " + sub + " --help", &sub_out), 0) << sub;
    EXPECT_THAT(sub_out, HasSubstr("--model")) << sub;
  }
}

// llama.cpp's --version says what built it; ours names the compiler, the build type and the
// kernels' optimisation level too (the kernels' speed depends on them: runtime/build_info.h).
TEST(Cli, VersionNamesTheBuild) {
  std::string out;
  ASSERT_EQ(run_command(bin() + " --version", &out), 0);
  EXPECT_THAT(out, HasSubstr(std::string("jetmoe ") + JETMOE_VERSION + " (" + jetmoe::build_summary() + ")"));
}

TEST(Cli, ScoreMachineInterfaceMatchesGolden) {
  for (const auto& dir : jetmoe::test::golden_checkpoints()) {
    const auto g = jetmoe::test::read_json(dir / "golden.json");
    const auto& seq = g["sequences"][2];
    std::string out;
    ASSERT_EQ(run_command(bin() + " score -m " + q(dir) + " --ids " + join(seq["token_ids"].get<std::vector<int32_t>>()) +
                              " --format json -t 2",
                          &out),
              0);
    const auto j = nlohmann::json::parse(out);
    const auto got = j["token_logprobs"].get<std::vector<double>>();
    const auto want = seq["token_logprobs"].get<std::vector<double>>();
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-4);
    EXPECT_NEAR(j["sum_logprob"].get<double>(), seq["sum_logprob"].get<double>(), 1e-3);
  }
}

TEST(Cli, GenerateMachineInterfaceMatchesGolden) {
  for (const auto& dir : jetmoe::test::golden_checkpoints()) {
    const auto g = jetmoe::test::read_json(dir / "golden.json");
    std::string out;
    ASSERT_EQ(run_command(bin() + " generate -m " + q(dir) + " --prompt-ids " +
                              join(g["greedy"]["prompt_ids"].get<std::vector<int32_t>>()) +
                              " -n 16 --temp 0 --ignore-eos --format json",
                          &out),
              0);
    EXPECT_EQ(nlohmann::json::parse(out)["generated_ids"], g["greedy"]["generated_ids"]) << dir;
  }
}

// --device cuda: on a GPU the golden tokens; in a CUDA build without a usable GPU the same tokens
// on the CPU after a notice; in a build without CUDA a clear error and a non-zero exit.
TEST(Cli, DeviceCudaRunsFallsBackOrSaysWhy) {
  const fs::path dir = jetmoe::test::golden_checkpoints().front();
  const auto g = jetmoe::test::read_json(dir / "golden.json");
  const std::string cmd = bin() + " generate --device cuda -m " + q(dir) + " --prompt-ids " +
                          join(g["greedy"]["prompt_ids"].get<std::vector<int32_t>>()) +
                          " -n 16 --temp 0 --ignore-eos --format json";
  const jetmoe::DeviceAvailability cuda = jetmoe::device_availability("cuda");
  std::string out, err_and_out;
  const int rc = run_command(cmd + " 2>&1 >/dev/null", &err_and_out, false);
  if (!cuda.built) {
    EXPECT_NE(rc, 0);
    EXPECT_THAT(err_and_out, HasSubstr("built without CUDA"));
    return;
  }
  EXPECT_EQ(rc, 0) << err_and_out;
  if (!cuda.usable) {
    EXPECT_THAT(err_and_out, HasSubstr("running on the CPU instead"));
  }
  ASSERT_EQ(run_command(cmd + " 2>/dev/null", &out), 0);
  EXPECT_EQ(nlohmann::json::parse(out)["generated_ids"], g["greedy"]["generated_ids"]);
}

TEST(Cli, TokenizeMachineInterfaceMatchesGolden) {
  const auto g = jetmoe::test::read_json(jetmoe::test::austen_model_dir() / "golden.json");
  const auto& c = g["tokenizer"][0];
  std::string out;
  ASSERT_EQ(run_command(bin() + " tokenize -p '" + c["text"].get<std::string>() + "' --format json", &out), 0);
  const auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["ids"], c["ids"]);
  EXPECT_EQ(j["pieces"], c["pieces"]);
}

TEST(Cli, GenerateOnBundledModelStreamsText) {
  std::string out;
  ASSERT_EQ(run_command(bin() + " generate -p 'It is a truth universally acknowledged' -n 24 --temp 0 2>/dev/null", &out), 0);
  EXPECT_THAT(out, ::testing::StartsWith("It is a truth universally acknowledged"));
  const auto g = jetmoe::test::read_json(jetmoe::test::austen_model_dir() / "golden.json");
  // Greedy: the first words of the golden continuation.
  EXPECT_THAT(out, HasSubstr(g["greedy"][0]["generated_text"].get<std::string>().substr(0, 30)));
  std::string err;
  ASSERT_EQ(run_command(bin() + " generate -p 'Emma' -n 4 --temp 0.8 -s 3 2>&1 >/dev/null", &err), 0);
  EXPECT_THAT(err, HasSubstr("tok/s"));
}

// llama.cpp's -ctk/-ctv spellings and the long names reach the cache: the log-likelihood of a
// sentence moves, by no more than each type's bound (tests/runtime/kv_cache_quality_test.cpp).
TEST(Cli, CompactKvCacheFlags) {
  std::string score = bin();
  score += " score --format json -p 'It is a truth universally acknowledged, that a single man in possession of a good "
           "fortune, must be in want of a wife.'";
  auto sum_logprob = [&](const std::string& flags) {
    std::string out;
    std::string cmd = score;
    cmd += " " + flags + " 2>/dev/null";
    EXPECT_EQ(run_command(cmd, &out), 0) << flags;
    return nlohmann::json::parse(out)["sum_logprob"].get<double>();
  };
  const double f32 = sum_logprob("");
  const double q8 = sum_logprob("-ctk q8_0 -ctv q8_0"), f16 = sum_logprob("--cache-type-k f16 --cache-type-v bf16");
  EXPECT_NE(q8, f32);
  EXPECT_NE(f16, f32);
  EXPECT_LE(std::fabs(q8 / f32 - 1), 1.5e-3);
  EXPECT_LE(std::fabs(f16 / f32 - 1), 2e-4);
}

TEST(Cli, SeededSamplingIsDeterministic) {
  std::string a, b;
  ASSERT_EQ(run_command(bin() + " generate -p 'Mr. Darcy' -n 20 --temp 0.9 -s 42 --format json", &a), 0);
  ASSERT_EQ(run_command(bin() + " generate -p 'Mr. Darcy' -n 20 --temp 0.9 -s 42 --format json", &b), 0);
  EXPECT_EQ(nlohmann::json::parse(a)["generated_ids"], nlohmann::json::parse(b)["generated_ids"]);
}

TEST(Cli, InspectReportsCounts) {
  std::string out;
  ASSERT_EQ(run_command(bin() + " inspect --format json", &out), 0);
  const auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["config"]["num_hidden_layers"], 4);
  EXPECT_GT(j["params_total"].get<int64_t>(), j["params_active_per_token"].get<int64_t>());
  EXPECT_GT(j["bytes_per_decoded_token"].get<int64_t>(), 0);
  EXPECT_EQ(j["tensors"].size(), 4u * 11u + 2u);
  // KV cache: 4 layers x 8 KV heads x (key + value) x 32 channels, as float32 (4 B) or Q8_0 (34 B / 32).
  EXPECT_EQ(j["kv_cache"]["bytes_per_token"], 4 * 8 * 2 * 32 * 4);
  EXPECT_EQ(j["kv_cache"]["bytes_at_context"], 4 * 8 * 2 * 32 * 4 * 1024);
  ASSERT_EQ(run_command(bin() + " inspect --format json -ctk q8_0 -ctv q8_0 -c 100", &out), 0);
  const auto q = nlohmann::json::parse(out);
  EXPECT_EQ(q["kv_cache"]["bytes_per_token"], 4 * 8 * 2 * 34);
  EXPECT_EQ(q["kv_cache"]["bytes_at_context"], 4 * 8 * 2 * 34 * 100);
}

struct BadCase {
  std::string args, expect;
};

TEST(Cli, BadInputGivesClearErrors) {
  const fs::path tmp = jetmoe::test::make_temp_dir("cli");
  const fs::path golden = jetmoe::test::golden_checkpoints().front();
  // A checkpoint whose weights file is cut in half.
  const fs::path cut = tmp / "cut";
  fs::create_directories(cut);
  fs::copy_file(golden / "config.json", cut / "config.json");
  {
    std::ifstream in(golden / "model.safetensors", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    std::ofstream(cut / "model.safetensors", std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
  }
  const std::vector<BadCase> cases = {
      {"score -m /nonexistent/model --ids 1,2", "/nonexistent/model"},
      {"score -m " + q(golden) + " --ids 1,x,3", "'x' is not a token id"},
      {"score -m " + q(golden) + " --ids 1,99999", "outside the vocabulary"},
      {"generate -m " + q(golden) + " --prompt-ids 1,2,3,4,5,6 -c 4 -n 2", "context"},
      {"score -m " + q(cut) + " --ids 1,2", "model.safetensors"},
      {"generate -m " + q(golden) + " -p 'hello'", "no tokenizer.model"},
      {"generate --temp -3", "--temp"},
      // the sampling flags are declared once (add_sampling_options) for generate, chat and serve
      {"chat --top-p 2", "--top-p: Value 2 not in range"},
      {"serve --repeat-last-n -1", "--repeat-last-n: Value -1 not in range"},
      {"generate --bogus-flag", "bogus"},
      {"tokenize -p \"$(printf '\\377\\376')\"", "UTF-8"},
      {"generate -p 'Emma' -n 2 -ctk q4_1", "--cache-type-k"},
      {"generate -m " + q(golden) + " --prompt-ids 1,2 -n 2 -ctv q8_0", "--cache-type-v: Q8_0 stores blocks of 32 values"},
  };
  for (const BadCase& c : cases) {
    std::string out;
    const int rc = run_command(bin() + " " + c.args, &out, true);
    EXPECT_NE(rc, 0) << c.args << "\n" << out;
    EXPECT_GT(rc, 0) << "crashed: " << c.args << "\n" << out;  // a signal gives -1 here
    EXPECT_LT(rc, 128) << "killed by a signal: " << c.args;
    EXPECT_THAT(out, HasSubstr(c.expect)) << c.args;
  }
}

}  // namespace
