// Safetensors reading: every golden checkpoint loads, and every kind of damaged file is a
// LoadError naming the file and the tensor (never a crash or a silent misread).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "loader/load_error.h"
#include "loader/model_files.h"
#include "loader/safetensors.h"
#include "support/test_paths.h"

namespace fs = std::filesystem;
using namespace jetmoe;
using ::testing::HasSubstr;

namespace {

// A safetensors file from a header JSON text and a data section.
std::string make_file(const std::string& header, size_t data_bytes, uint64_t forced_len = 0) {
  std::string s(8, '\0');
  const uint64_t n = forced_len ? forced_len : header.size();
  for (int i = 0; i < 8; ++i) s[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  s += header;
  s += std::string(data_bytes, '\x01');
  return s;
}

std::string parse_error(const std::string& bytes, const std::string& name = "bad.safetensors") {
  try {
    SafetensorsFile::parse(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), name);
  } catch (const LoadError& e) {
    return e.what();
  }
  return "";
}

TEST(SafetensorsLoader, ParsesAValidFile) {
  const std::string f = make_file(R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
                                  R"("b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]}})", 32);
  auto st = SafetensorsFile::parse(reinterpret_cast<const uint8_t*>(f.data()), f.size(), "ok.safetensors");
  ASSERT_EQ(st->tensors().size(), 2u);
  const TensorInfo* a = st->find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->dtype, DType::F32);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a->nbytes, 24u);
  EXPECT_EQ(st->find("b")->dtype, DType::BF16);
  EXPECT_EQ(st->find("missing"), nullptr);
}

struct Bad {
  std::string what, bytes, expect1, expect2;
};

TEST(SafetensorsLoader, DamagedFilesAreClearErrors) {
  const std::string ok_entry = R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::vector<Bad> cases = {
      {"shorter than the length field", std::string("\x05\x00\x00", 3), "too short", "bad.safetensors"},
      {"header length past the end", make_file("{" + ok_entry + "}", 8, 1000000), "runs past the end", "bad.safetensors"},
      {"forged huge header length", make_file("{}", 0, 0xffffffffffffull), "runs past the end", "bad.safetensors"},
      {"header not JSON", make_file("{not json}", 0), "not valid JSON", "bad.safetensors"},
      {"header JSON not an object", make_file("[1,2,3]   ", 0), "not a JSON object", "bad.safetensors"},
      {"unknown dtype", make_file(R"({"w":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}})", 16), "I64", "'w'"},
      {"offsets past the data", make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4), "outside the data", "'w'"},
      {"offsets reversed", make_file(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 8), "outside the data", "'w'"},
      {"shape and byte count disagree", make_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "needs 12 bytes", "'w'"},
      {"negative dimension", make_file(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8), "non-negative", "'w'"},
      {"overflowing shape", make_file(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8), "too large", "'w'"},
      {"overlapping tensors",
       make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
       "overlap", "'a'"},
      {"entry without dtype", make_file(R"({"w":{"shape":[2],"data_offsets":[0,8]}})", 8), "dtype", "'w'"},
      {"data_offsets of wrong arity", make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8), "data_offsets", "'w'"},
  };
  for (const Bad& c : cases) {
    const std::string msg = parse_error(c.bytes);
    EXPECT_THAT(msg, HasSubstr(c.expect1)) << c.what;
    EXPECT_THAT(msg, HasSubstr(c.expect2)) << c.what;
  }
}

TEST(SafetensorsLoader, EveryGoldenCheckpointLoads) {
  for (const auto& dir : test::golden_checkpoints()) {
    auto ck = SafetensorsCheckpoint::open(dir.string());
    const auto g = test::read_json(dir / "golden.json");
    const int layers = g["config"]["num_hidden_layers"];
    const bool tied = g["config"]["tie_word_embeddings"];
    EXPECT_EQ(ck->tensors().size(), static_cast<size_t>(layers * 11 + 2 + (tied ? 0 : 1))) << dir;
    EXPECT_NE(ck->find("model.norm.weight"), nullptr);
  }
}

TEST(SafetensorsLoader, ReadAndMlockModesGiveTheSameBytes) {
  const fs::path f = test::golden_checkpoints().front() / "model.safetensors";
  auto a = SafetensorsFile::open(f.string(), LoadMode::Mmap);
  auto b = SafetensorsFile::open(f.string(), LoadMode::Read);
  auto c = SafetensorsFile::open(f.string(), LoadMode::Mlock);
  for (const TensorInfo& t : a->tensors()) {
    ASSERT_EQ(0, std::memcmp(t.data, b->find(t.name)->data, t.nbytes)) << t.name;
    ASSERT_EQ(0, std::memcmp(t.data, c->find(t.name)->data, t.nbytes)) << t.name;
  }
}

// Copies a golden checkpoint into a temp dir so it can be damaged.
fs::path copy_checkpoint(const fs::path& src, const std::string& tag) {
  const fs::path dst = test::make_temp_dir(tag);
  for (const auto& e : fs::directory_iterator(src)) fs::copy_file(e.path(), dst / e.path().filename());
  return dst;
}

std::string load_error(const fs::path& dir) {
  try {
    load_model_files(dir.string());
  } catch (const LoadError& e) {
    return e.what();
  }
  return "";
}

fs::path sharded_golden() {
  for (const auto& d : test::golden_checkpoints())
    if (fs::exists(d / "model.safetensors.index.json")) return d;
  ADD_FAILURE() << "no sharded golden checkpoint";
  return {};
}

TEST(SafetensorsLoader, ShardedIndexProblemsNameTheShard) {
  const fs::path src = sharded_golden();
  {
    const fs::path d = copy_checkpoint(src, "missing-shard");
    fs::remove(d / "model-00002-of-00002.safetensors");
    const std::string msg = load_error(d);
    EXPECT_THAT(msg, HasSubstr("model-00002-of-00002.safetensors"));
    EXPECT_THAT(msg, HasSubstr("does not exist"));
  }
  {
    const fs::path d = copy_checkpoint(src, "wrong-shard");
    auto idx = test::read_json(d / "model.safetensors.index.json");
    idx["weight_map"]["model.norm.weight"] = idx["weight_map"]["model.norm.weight"] == "model-00001-of-00002.safetensors"
                                                 ? "model-00002-of-00002.safetensors"
                                                 : "model-00001-of-00002.safetensors";
    std::ofstream(d / "model.safetensors.index.json") << idx.dump();
    const std::string msg = load_error(d);
    EXPECT_THAT(msg, HasSubstr("model.norm.weight"));
    EXPECT_THAT(msg, HasSubstr("does not contain it"));
  }
  {
    const fs::path d = copy_checkpoint(src, "bad-index");
    std::ofstream(d / "model.safetensors.index.json") << "{\"weight_map\": [";
    EXPECT_THAT(load_error(d), HasSubstr("invalid JSON"));
  }
}

TEST(SafetensorsLoader, MissingOrMisshapenTensorsAreNamed) {
  const fs::path src = test::golden_checkpoints().front();
  auto rewrite = [&](const std::string& tag, auto edit) {
    const fs::path d = copy_checkpoint(src, tag);
    std::ifstream in(d / "model.safetensors", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    in.close();
    uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    auto header = nlohmann::json::parse(bytes.substr(8, n));
    const std::string data = bytes.substr(8 + n);
    edit(header);
    std::string h = header.dump();
    while (h.size() % 8) h += ' ';
    std::ofstream(d / "model.safetensors", std::ios::binary) << make_file(h, 0) << data;
    return d;
  };
  {
    const fs::path d = rewrite("missing", [](nlohmann::json& h) { h.erase("model.layers.1.mlp.output_linear.weight"); });
    const std::string msg = load_error(d);
    EXPECT_THAT(msg, HasSubstr("missing tensor 'model.layers.1.mlp.output_linear.weight'"));
  }
  {
    // Same bytes, transposed shape: the byte count matches, the shape does not.
    const fs::path d = rewrite("shape", [](nlohmann::json& h) {
      auto& s = h["model.layers.0.self_attention.experts.output_linear.weight"]["shape"];
      std::swap(s[1], s[2]);
    });
    const std::string msg = load_error(d);
    EXPECT_THAT(msg, HasSubstr("model.layers.0.self_attention.experts.output_linear.weight"));
    EXPECT_THAT(msg, HasSubstr("expected"));
  }
}

TEST(SafetensorsLoader, MissingFilesAreNamed) {
  EXPECT_THAT(load_error("/nonexistent/jetmoe"), HasSubstr("/nonexistent/jetmoe"));
  const fs::path d = test::make_temp_dir("empty");
  EXPECT_THAT(load_error(d), HasSubstr("config.json"));
  fs::copy_file(test::golden_checkpoints().front() / "config.json", d / "config.json");
  EXPECT_THAT(load_error(d), HasSubstr("no model.safetensors"));
}

}  // namespace
