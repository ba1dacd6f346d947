#include "support/test_paths.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>

namespace fs = std::filesystem;

namespace jetmoe::test {

std::vector<fs::path> golden_checkpoints() {
  std::vector<fs::path> out;
  // JETMOE_GOLDEN_DIR in the environment overrides the built-in path (a test binary run on another
  // machine, e.g. a GPU host that has a copy of the checkpoints elsewhere).
  const char* env = std::getenv("JETMOE_GOLDEN_DIR");
  const fs::path root(env && *env ? env : JETMOE_GOLDEN_DIR);
  if (!fs::is_directory(root)) {
    ADD_FAILURE() << "golden checkpoints not found at " << root << " (../shared/golden beside the checkout)";
    return out;
  }
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory() && fs::exists(e.path() / "golden.json")) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  if (out.empty()) ADD_FAILURE() << "no golden checkpoints under " << root;
  return out;
}

fs::path austen_model_dir() { return fs::path(JETMOE_MODELS_DIR) / "austen-jetmoe"; }
fs::path test_data_dir() { return fs::path(JETMOE_TEST_DATA_DIR); }

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  if (!in) throw std::runtime_error("cannot open " + p.string());
  return nlohmann::json::parse(in);
}

std::vector<float> read_golden_array(const fs::path& dir, const nlohmann::json& desc) {
  size_t n = 1;
  for (const auto& d : desc["shape"]) n *= d.get<size_t>();
  std::vector<float> v(n);
  std::ifstream in(dir / desc["file"].get<std::string>(), std::ios::binary);
  in.seekg(desc["offset_bytes"].get<std::streamoff>());
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n * sizeof(float)));
  if (!in) throw std::runtime_error("short read of golden array in " + dir.string());
  return v;
}

fs::path make_temp_dir(const std::string& tag) {
  static std::mt19937_64 rng(std::random_device{}());
  fs::path p = fs::path(::testing::TempDir()) / ("jetmoe-" + tag + "-" + std::to_string(rng()));
  fs::create_directories(p);
  return p;
}

int run_command(const std::string& cmd, std::string* out, bool merge_stderr) {
  const std::string full = cmd + (merge_stderr ? " 2>&1" : "");
  FILE* p = popen(full.c_str(), "r");
  if (!p) return -1;
  std::array<char, 4096> buf;
  std::string s;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) s.append(buf.data(), n);
  const int st = pclose(p);
  if (out) *out = s;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

std::string jetmoe_binary() { return JETMOE_BINARY; }

}  // namespace jetmoe::test
