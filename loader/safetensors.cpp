#include "loader/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include "loader/load_error.h"

namespace fs = std::filesystem;

namespace jetmoe {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // real headers are a few hundred KiB

bool parse_dtype(const std::string& s, DType& out) {
  if (s == "F32") out = DType::F32;
  else if (s == "F16") out = DType::F16;
  else if (s == "BF16") out = DType::BF16;
  else return false;
  return true;
}

}  // namespace

std::unique_ptr<SafetensorsFile> SafetensorsFile::parse(const uint8_t* bytes, size_t size, const std::string& path) {
  auto f = std::make_unique<SafetensorsFile>();
  f->path_ = path;
  f->size_ = size;
  if (size < 8)
    throw LoadError(path + ": file of " + std::to_string(size) + " bytes is too short for a safetensors header (8-byte length)");
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | bytes[i];  // little-endian u64
  if (hlen > size - 8)
    throw LoadError(path + ": header length " + std::to_string(hlen) + " runs past the end of the file (" +
                    std::to_string(size) + " bytes): truncated or not a safetensors file");
  if (hlen > kMaxHeaderBytes)
    throw LoadError(path + ": header length " + std::to_string(hlen) + " is over the " + std::to_string(kMaxHeaderBytes) +
                    "-byte limit");
  if (hlen < 2) throw LoadError(path + ": header of " + std::to_string(hlen) + " bytes cannot hold a JSON object");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes + 8, bytes + 8 + hlen);
  } catch (const nlohmann::json::exception& e) {
    throw LoadError(path + ": header is not valid JSON: " + e.what());
  }
  if (!header.is_object()) throw LoadError(path + ": header is not a JSON object");

  const uint8_t* data = bytes + 8 + hlen;
  const uint64_t data_size = size - 8 - hlen;
  struct Range {
    uint64_t begin, end;
    std::string name;
  };
  std::vector<Range> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") {
      if (!it.value().is_object()) throw LoadError(path + ": '__metadata__' is not an object");
      continue;
    }
    const std::string where = path + ": tensor '" + name + "'";
    const nlohmann::json& e = it.value();
    if (!e.is_object()) throw LoadError(where + ": entry is not an object");
    if (!e.contains("dtype") || !e["dtype"].is_string()) throw LoadError(where + ": missing string field 'dtype'");
    if (!e.contains("shape") || !e["shape"].is_array()) throw LoadError(where + ": missing array field 'shape'");
    if (!e.contains("data_offsets") || !e["data_offsets"].is_array() || e["data_offsets"].size() != 2)
      throw LoadError(where + ": 'data_offsets' must be an array [begin, end]");
    TensorInfo t;
    t.name = name;
    t.file = path;
    const std::string dt = e["dtype"].get<std::string>();
    if (!parse_dtype(dt, t.dtype))
      throw LoadError(where + " has dtype " + dt + "; this runtime reads F32, F16 and BF16");
    if (e["shape"].size() > 8) throw LoadError(where + ": shape has " + std::to_string(e["shape"].size()) + " dimensions");
    uint64_t numel = 1;
    for (const auto& d : e["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0)
        throw LoadError(where + ": shape " + e["shape"].dump() + " must hold non-negative integers");
      const uint64_t v = d.get<uint64_t>();
      if (v != 0 && numel > std::numeric_limits<uint64_t>::max() / 16 / v)
        throw LoadError(where + ": shape " + e["shape"].dump() + " is too large");
      numel *= v;
      t.shape.push_back(static_cast<int64_t>(v));
    }
    const auto& off = e["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      throw LoadError(where + ": data_offsets " + off.dump() + " must be non-negative integers");
    const uint64_t b = off[0].get<uint64_t>(), en = off[1].get<uint64_t>();
    if (b > en || en > data_size)
      throw LoadError(where + ": data_offsets " + off.dump() + " fall outside the data section of " +
                      std::to_string(data_size) + " bytes");
    const uint64_t want = numel * dtype_block_bytes(t.dtype);
    if (en - b != want)
      throw LoadError(where + ": " + dt + " " + shape_to_string(t.shape) + " needs " + std::to_string(want) +
                      " bytes but data_offsets " + off.dump() + " span " + std::to_string(en - b));
    t.data = data + b;
    t.nbytes = static_cast<size_t>(want);
    ranges.push_back({b, en, name});
    f->index_[name] = f->tensors_.size();
    f->tensors_.push_back(std::move(t));
  }
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].begin < ranges[i - 1].end)
      throw LoadError(path + ": tensors '" + ranges[i - 1].name + "' and '" + ranges[i].name + "' overlap in the data section");
  return f;
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path, LoadMode mode) {
  std::shared_ptr<MappedFile> m = MappedFile::open(path, mode);
  auto f = parse(m->data(), m->size(), path);
  f->file_ = std::move(m);
  return f;
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

std::unique_ptr<SafetensorsCheckpoint> SafetensorsCheckpoint::open(const std::string& path, LoadMode mode) {
  auto c = std::make_unique<SafetensorsCheckpoint>();
  c->path_ = path;
  fs::path p(path);
  fs::path index_file = p / "model.safetensors.index.json";
  const bool given_index = fs::is_regular_file(p) && path.size() > 11 && path.compare(path.size() - 11, 11, ".index.json") == 0;
  if (given_index) {  // the index file itself: its shards live beside it
    index_file = p;
    p = p.parent_path();
  }
  if (fs::is_regular_file(p) && !given_index) {
    c->files_.push_back(SafetensorsFile::open(path, mode));
  } else if (fs::exists(index_file)) {
    const std::string index_path = index_file.string();
    nlohmann::json idx;
    try {
      std::ifstream in(index_path);
      idx = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      throw LoadError(index_path + ": invalid JSON: " + e.what());
    }
    if (!idx.is_object() || !idx.contains("weight_map") || !idx["weight_map"].is_object())
      throw LoadError(index_path + ": missing object field 'weight_map'");
    std::map<std::string, size_t> shard_of;  // shard file name -> files_ index
    std::vector<std::pair<std::string, std::string>> wanted;
    for (auto it = idx["weight_map"].begin(); it != idx["weight_map"].end(); ++it) {
      if (!it.value().is_string()) throw LoadError(index_path + ": weight_map entry '" + it.key() + "' is not a file name");
      const std::string shard = it.value().get<std::string>();
      if (shard.find('/') != std::string::npos || shard == ".." || shard.empty())
        throw LoadError(index_path + ": weight_map entry '" + it.key() + "' names '" + shard + "', not a file in the folder");
      if (!shard_of.count(shard)) {
        const fs::path sp = p / shard;
        if (!fs::exists(sp))
          throw LoadError(index_path + ": shard '" + shard + "' (for tensor '" + it.key() + "') does not exist");
        shard_of[shard] = c->files_.size();
        c->files_.push_back(SafetensorsFile::open(sp.string(), mode));
      }
      wanted.emplace_back(it.key(), shard);
    }
    for (const auto& [name, shard] : wanted) {
      const TensorInfo* t = c->files_[shard_of[shard]]->find(name);
      if (!t) throw LoadError(index_path + ": tensor '" + name + "' is mapped to '" + shard + "', which does not contain it");
      c->by_name_[name] = t;
      c->order_.push_back(t);
    }
    return c;
  } else if (fs::exists(p / "model.safetensors")) {
    c->files_.push_back(SafetensorsFile::open((p / "model.safetensors").string(), mode));
  } else {
    throw LoadError(path + ": no model.safetensors or model.safetensors.index.json");
  }
  for (const auto& f : c->files_)
    for (const TensorInfo& t : f->tensors()) {
      c->by_name_[t.name] = &t;
      c->order_.push_back(&t);
    }
  return c;
}

const TensorInfo* SafetensorsCheckpoint::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

std::vector<const TensorInfo*> SafetensorsCheckpoint::tensors() const { return order_; }

size_t SafetensorsCheckpoint::file_bytes() const {
  size_t s = 0;
  for (const auto& f : files_) s += f->size();
  return s;
}

}  // namespace jetmoe
