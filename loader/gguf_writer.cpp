#include "loader/gguf_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "loader/gguf_file.h"
#include "loader/load_error.h"

namespace jetmoe {
namespace {

// The bytes of v at the end of b. (Not vector::insert of sizeof(T) bytes: GCC 12's
// -Wstringop-overflow misreads that once inlined into write().)
template <class T>
void put(std::vector<uint8_t>& b, T v) {
  const size_t at = b.size();
  b.resize(at + sizeof(T));
  std::memcpy(b.data() + at, &v, sizeof(T));
}

void put_str(std::vector<uint8_t>& b, const std::string& s) {
  put<uint64_t>(b, s.size());
  b.insert(b.end(), s.begin(), s.end());
}

}  // namespace

void GgufWriter::key(const std::string& k, uint32_t type) {
  put_str(kv_, k);
  put<uint32_t>(kv_, type);
  ++n_kv_;
}

void GgufWriter::add_u32(const std::string& k, uint32_t v) { key(k, 4), put(kv_, v); }
void GgufWriter::add_i32(const std::string& k, int32_t v) { key(k, 5), put(kv_, v); }
void GgufWriter::add_u64(const std::string& k, uint64_t v) { key(k, 10), put(kv_, v); }
void GgufWriter::add_f32(const std::string& k, float v) { key(k, 6), put(kv_, v); }
void GgufWriter::add_bool(const std::string& k, bool v) { key(k, 7), put<uint8_t>(kv_, v ? 1 : 0); }
void GgufWriter::add_string(const std::string& k, const std::string& v) { key(k, 8), put_str(kv_, v); }

void GgufWriter::add_string_array(const std::string& k, const std::vector<std::string>& v) {
  key(k, 9);
  put<uint32_t>(kv_, 8);
  put<uint64_t>(kv_, v.size());
  for (const auto& s : v) put_str(kv_, s);
}
void GgufWriter::add_f32_array(const std::string& k, const std::vector<float>& v) {
  key(k, 9);
  put<uint32_t>(kv_, 6);
  put<uint64_t>(kv_, v.size());
  for (float x : v) put(kv_, x);
}
void GgufWriter::add_i32_array(const std::string& k, const std::vector<int32_t>& v) {
  key(k, 9);
  put<uint32_t>(kv_, 5);
  put<uint64_t>(kv_, v.size());
  for (int32_t x : v) put(kv_, x);
}
void GgufWriter::add_u8_array(const std::string& k, const std::vector<uint8_t>& v) {
  key(k, 9);
  put<uint32_t>(kv_, 0);
  put<uint64_t>(kv_, v.size());
  kv_.insert(kv_.end(), v.begin(), v.end());
}

void GgufWriter::add_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape, const void* data,
                            size_t nbytes) {
  tensors_.push_back({name, dtype, shape, data, nbytes});
}

void GgufWriter::write(const std::string& path) const {
  std::vector<uint8_t> head;
  put<uint32_t>(head, 0x46554747);
  put<uint32_t>(head, 3);
  put<uint64_t>(head, tensors_.size());
  put<uint64_t>(head, n_kv_);
  head.insert(head.end(), kv_.begin(), kv_.end());
  uint64_t offset = 0;
  std::vector<uint64_t> offsets;
  for (const Tensor& t : tensors_) {
    put_str(head, t.name);
    put<uint32_t>(head, static_cast<uint32_t>(t.shape.size()));
    for (size_t d = t.shape.size(); d-- > 0;) put<uint64_t>(head, static_cast<uint64_t>(t.shape[d]));
    put<uint32_t>(head, ggml_type_of(t.dtype));
    put<uint64_t>(head, offset);
    offsets.push_back(offset);
    offset = (offset + t.nbytes + kAlignment - 1) / kAlignment * kAlignment;
  }
  head.resize((head.size() + kAlignment - 1) / kAlignment * kAlignment, 0);

  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw LoadError(path + ": cannot write: " + std::strerror(errno));
  bool ok = std::fwrite(head.data(), 1, head.size(), f) == head.size();
  static const uint8_t zeros[kAlignment] = {};
  for (size_t i = 0; ok && i < tensors_.size(); ++i) {
    ok = std::fwrite(tensors_[i].data, 1, tensors_[i].nbytes, f) == tensors_[i].nbytes;
    const size_t pad = (kAlignment - tensors_[i].nbytes % kAlignment) % kAlignment;
    if (ok && pad) ok = std::fwrite(zeros, 1, pad, f) == pad;
  }
  ok = ok && std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    throw LoadError(path + ": writing the GGUF file failed: " + std::strerror(err));
  }
}

}  // namespace jetmoe
