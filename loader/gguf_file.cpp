#include "loader/gguf_file.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>

#include "loader/load_error.h"

namespace jetmoe {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint64_t kMaxArrayDepth = 1;   // arrays of arrays are not used by any model file we read

// Bounds-checked little-endian reader over the file bytes.
class Cursor {
 public:
  Cursor(const uint8_t* p, size_t n, const std::string& path) : p_(p), n_(n), path_(path) {}
  size_t pos() const { return pos_; }
  size_t left() const { return n_ - pos_; }
  template <class T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string str(const std::string& what) {
    const uint64_t len = read<uint64_t>(what + " (string length)");
    if (len > left())
      throw LoadError(path_ + ": " + what + ": string length " + std::to_string(len) + " is more than the " +
                      std::to_string(left()) + " bytes left in the file");
    std::string s(reinterpret_cast<const char*>(p_ + pos_), static_cast<size_t>(len));
    pos_ += static_cast<size_t>(len);
    return s;
  }
  void need(size_t k, const std::string& what) const {
    if (k > left()) throw LoadError(path_ + ": truncated while reading " + what + " at byte " + std::to_string(pos_));
  }
  void skip(size_t k, const std::string& what) {
    need(k, what);
    pos_ += k;
  }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
  const std::string& path_;
};

size_t scalar_size(GgufType t) {
  switch (t) {
    case GgufType::UINT8: case GgufType::INT8: case GgufType::BOOL: return 1;
    case GgufType::UINT16: case GgufType::INT16: return 2;
    case GgufType::UINT32: case GgufType::INT32: case GgufType::FLOAT32: return 4;
    case GgufType::UINT64: case GgufType::INT64: case GgufType::FLOAT64: return 8;
    default: return 0;
  }
}

bool dtype_of_ggml(uint32_t id, DType& out) {
  switch (id) {
    case 0: out = DType::F32; return true;
    case 1: out = DType::F16; return true;
    case 2: out = DType::Q4_0; return true;
    case 8: out = DType::Q8_0; return true;
    case 12: out = DType::Q4_K; return true;
    case 30: out = DType::BF16; return true;
    default: return false;
  }
}

// One scalar of type t widened into the variant's integer/float/bool alternatives.
void read_scalar(Cursor& c, GgufType t, GgufValue& out, const std::string& what) {
  switch (t) {
    case GgufType::UINT8: out.v = static_cast<uint64_t>(c.read<uint8_t>(what)); break;
    case GgufType::INT8: out.v = static_cast<int64_t>(c.read<int8_t>(what)); break;
    case GgufType::UINT16: out.v = static_cast<uint64_t>(c.read<uint16_t>(what)); break;
    case GgufType::INT16: out.v = static_cast<int64_t>(c.read<int16_t>(what)); break;
    case GgufType::UINT32: out.v = static_cast<uint64_t>(c.read<uint32_t>(what)); break;
    case GgufType::INT32: out.v = static_cast<int64_t>(c.read<int32_t>(what)); break;
    case GgufType::UINT64: out.v = c.read<uint64_t>(what); break;
    case GgufType::INT64: out.v = c.read<int64_t>(what); break;
    case GgufType::FLOAT32: out.v = static_cast<double>(c.read<float>(what)); break;
    case GgufType::FLOAT64: out.v = c.read<double>(what); break;
    case GgufType::BOOL: out.v = c.read<uint8_t>(what) != 0; break;
    default: break;
  }
}

}  // namespace

const char* gguf_type_name(GgufType t) {
  static const char* names[] = {"UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32",
                                "BOOL", "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64"};
  const auto i = static_cast<uint32_t>(t);
  return i < 13 ? names[i] : "?";
}

uint32_t ggml_type_of(DType t) {
  switch (t) {
    case DType::F32: return 0;
    case DType::F16: return 1;
    case DType::Q4_0: return 2;
    case DType::Q8_0: return 8;
    case DType::Q4_K: return 12;
    case DType::BF16: return 30;
    case DType::Q8_0R:
    case DType::Q4_0R:
    case DType::Q4_KR:
      throw std::logic_error(std::string("ggml_type_of: ") + dtype_name(t) +
                             " is an in-memory layout; files hold the block layout (quant/repack.h)");
  }
  return 0;
}

std::unique_ptr<GgufFile> GgufFile::parse(const uint8_t* data, size_t size, const std::string& path) {
  auto f = std::make_unique<GgufFile>();
  f->path_ = path;
  f->size_ = size;
  Cursor c(data, size, path);
  if (size < 4 || c.read<uint32_t>("magic") != kMagic) throw LoadError(path + ": not a GGUF file (the magic is not 'GGUF')");
  f->version_ = c.read<uint32_t>("version");
  if (f->version_ != 2 && f->version_ != 3) {
    // A big-endian GGUF (written for s390x and the like) has its version bytes swapped.
    const uint32_t v = f->version_;
    const uint32_t swapped = (v >> 24) | ((v >> 8) & 0xff00u) | ((v << 8) & 0xff0000u) | (v << 24);
    if (swapped == 2 || swapped == 3)
      throw LoadError(path + ": a big-endian GGUF v" + std::to_string(swapped) +
                      " file; this reader supports little-endian GGUF only");
    throw LoadError(path + ": GGUF version " + std::to_string(v) + "; this reader supports GGUF v2 and v3");
  }
  const uint64_t n_tensors = c.read<uint64_t>("tensor count");
  const uint64_t n_kv = c.read<uint64_t>("metadata count");
  // Each key/value takes at least 12 bytes and each tensor info at least 28: a count the file cannot
  // hold is rejected before anything is allocated for it.
  if (n_kv > c.left() / 12) throw LoadError(path + ": metadata count " + std::to_string(n_kv) + " cannot fit in the file");
  if (n_tensors > c.left() / 28) throw LoadError(path + ": tensor count " + std::to_string(n_tensors) + " cannot fit in the file");

  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string key = c.str("metadata key #" + std::to_string(i));
    const std::string what = "metadata key '" + key + "'";
    if (f->kv_.count(key)) throw LoadError(path + ": duplicate " + what);
    GgufValue val;
    const uint32_t t = c.read<uint32_t>(what + " type");
    if (t > 12) throw LoadError(path + ": " + what + " has unknown value type " + std::to_string(t));
    val.type = static_cast<GgufType>(t);
    if (val.type == GgufType::STRING) {
      val.v = c.str(what);
    } else if (val.type == GgufType::ARRAY) {
      const uint32_t et = c.read<uint32_t>(what + " element type");
      if (et > 12 || et == static_cast<uint32_t>(GgufType::ARRAY))
        throw LoadError(path + ": " + what + " is an array of unsupported element type " + std::to_string(et));
      val.elem_type = static_cast<GgufType>(et);
      const uint64_t count = c.read<uint64_t>(what + " array count");
      const size_t min_elem = val.elem_type == GgufType::STRING ? 8 : scalar_size(val.elem_type);
      if (count > c.left() / min_elem)
        throw LoadError(path + ": " + what + ": array count " + std::to_string(count) + " is more than the file can hold");
      if (val.elem_type == GgufType::STRING) {
        std::vector<std::string> a;
        a.reserve(static_cast<size_t>(count));
        for (uint64_t k = 0; k < count; ++k) a.push_back(c.str(what + "[" + std::to_string(k) + "]"));
        val.v = std::move(a);
      } else if (val.elem_type == GgufType::UINT8 || val.elem_type == GgufType::INT8) {
        std::vector<uint8_t> a(static_cast<size_t>(count));
        c.need(a.size(), what);
        for (auto& b : a) b = c.read<uint8_t>(what);
        val.v = std::move(a);
      } else if (val.elem_type == GgufType::FLOAT32 || val.elem_type == GgufType::FLOAT64) {
        std::vector<double> a;
        a.reserve(static_cast<size_t>(count));
        GgufValue tmp;
        for (uint64_t k = 0; k < count; ++k) {
          read_scalar(c, val.elem_type, tmp, what);
          a.push_back(std::get<double>(tmp.v));
        }
        val.v = std::move(a);
      } else {
        std::vector<int64_t> a;
        a.reserve(static_cast<size_t>(count));
        GgufValue tmp;
        for (uint64_t k = 0; k < count; ++k) {
          read_scalar(c, val.elem_type, tmp, what);
          if (std::holds_alternative<uint64_t>(tmp.v)) a.push_back(static_cast<int64_t>(std::get<uint64_t>(tmp.v)));
          else if (std::holds_alternative<bool>(tmp.v)) a.push_back(std::get<bool>(tmp.v));
          else a.push_back(std::get<int64_t>(tmp.v));
        }
        val.v = std::move(a);
      }
    } else {
      read_scalar(c, val.type, val, what);
    }
    f->kv_[key] = std::move(val);
  }
  (void)kMaxArrayDepth;

  uint64_t alignment = 32;
  if (f->kv_.count("general.alignment")) {
    alignment = f->get_uint("general.alignment");
    if (alignment == 0 || (alignment & (alignment - 1)) != 0 || alignment > (1u << 20))
      throw LoadError(path + ": general.alignment = " + std::to_string(alignment) + " is not a power of two");
  }

  struct Raw {
    std::string name;
    std::vector<int64_t> shape;
    DType dtype;
    uint64_t offset, nbytes;
  };
  std::vector<Raw> raw;
  raw.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    Raw r;
    r.name = c.str("tensor name #" + std::to_string(i));
    const std::string what = "tensor '" + r.name + "'";
    const uint32_t nd = c.read<uint32_t>(what + " dimension count");
    if (nd == 0 || nd > 4) throw LoadError(path + ": " + what + " has " + std::to_string(nd) + " dimensions (expected 1 to 4)");
    std::vector<uint64_t> ne(nd);
    uint64_t numel = 1;
    for (uint32_t d = 0; d < nd; ++d) {
      ne[d] = c.read<uint64_t>(what + " dimension");
      if (ne[d] == 0 || ne[d] > (1ull << 40) || numel > (1ull << 50) / ne[d])
        throw LoadError(path + ": " + what + " has an implausible dimension " + std::to_string(ne[d]));
      numel *= ne[d];
    }
    const uint32_t type = c.read<uint32_t>(what + " type");
    if (!dtype_of_ggml(type, r.dtype))
      throw LoadError(path + ": " + what + " has ggml type " + std::to_string(type) +
                      "; this runtime reads F32(0), F16(1), Q4_0(2), Q8_0(8), Q4_K(12), BF16(30)");
    if (ne[0] % dtype_block_elems(r.dtype) != 0)
      throw LoadError(path + ": " + what + " of type " + dtype_name(r.dtype) + " has rows of " + std::to_string(ne[0]) +
                      " elements, not a multiple of the block size " + std::to_string(dtype_block_elems(r.dtype)));
    r.offset = c.read<uint64_t>(what + " offset");
    if (r.offset % alignment != 0)
      throw LoadError(path + ": " + what + " data offset " + std::to_string(r.offset) + " is not aligned to " + std::to_string(alignment));
    for (uint32_t d = nd; d-- > 0;) r.shape.push_back(static_cast<int64_t>(ne[d]));  // ggml order is innermost first
    r.nbytes = numel / dtype_block_elems(r.dtype) * dtype_block_bytes(r.dtype);
    raw.push_back(std::move(r));
  }
  const uint64_t data_start = (c.pos() + alignment - 1) / alignment * alignment;
  if (data_start > size && !raw.empty()) throw LoadError(path + ": truncated before the tensor data section");
  const uint64_t data_size = size > data_start ? size - data_start : 0;

  std::vector<size_t> order(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return raw[a].offset < raw[b].offset; });
  for (size_t k = 0; k < order.size(); ++k) {
    const Raw& r = raw[order[k]];
    if (r.offset > data_size || r.nbytes > data_size - r.offset)
      throw LoadError(path + ": tensor '" + r.name + "' (" + std::to_string(r.nbytes) + " bytes at offset " + std::to_string(r.offset) +
                      ") runs past the end of the file");
    if (k > 0) {
      const Raw& prev = raw[order[k - 1]];
      if (prev.offset + prev.nbytes > r.offset)
        throw LoadError(path + ": tensors '" + prev.name + "' and '" + r.name + "' overlap");
    }
  }
  for (Raw& r : raw) {
    if (f->index_.count(r.name)) throw LoadError(path + ": duplicate tensor '" + r.name + "'");
    TensorInfo t;
    t.name = r.name;
    t.dtype = r.dtype;
    t.shape = std::move(r.shape);
    t.data = data + data_start + r.offset;
    t.nbytes = static_cast<size_t>(r.nbytes);
    t.file = path;
    f->index_[t.name] = f->tensors_.size();
    f->tensors_.push_back(std::move(t));
  }
  return f;
}

std::unique_ptr<GgufFile> GgufFile::open(const std::string& path, LoadMode mode) {
  std::shared_ptr<MappedFile> m = MappedFile::open(path, mode);
  auto f = parse(m->data(), m->size(), path);
  f->file_ = std::move(m);
  return f;
}

int GgufFile::repack_for_cpu() {
  if (!file_ || file_->owned_data() == nullptr) return 0;
  int n = 0;
  for (TensorInfo& t : tensors_)  // data points into the owned copy: the same bytes, writable
    n += repack_tensor_for_cpu(t, file_->owned_data() + (t.data - file_->data())) ? 1 : 0;
  return n;
}

const GgufValue& GgufFile::get(const std::string& key, GgufType want) const {
  auto it = kv_.find(key);
  if (it == kv_.end()) throw LoadError(path_ + ": missing metadata key '" + key + "'");
  (void)want;
  return it->second;
}

uint64_t GgufFile::get_uint(const std::string& key) const {
  const GgufValue& v = get(key, GgufType::UINT64);
  if (const auto* u = std::get_if<uint64_t>(&v.v)) return *u;
  if (const auto* i = std::get_if<int64_t>(&v.v); i && *i >= 0) return static_cast<uint64_t>(*i);
  throw LoadError(path_ + ": metadata key '" + key + "' has type " + gguf_type_name(v.type) + ", expected a non-negative integer");
}

int64_t GgufFile::get_int(const std::string& key) const {
  const GgufValue& v = get(key, GgufType::INT64);
  if (const auto* i = std::get_if<int64_t>(&v.v)) return *i;
  if (const auto* u = std::get_if<uint64_t>(&v.v); u && *u <= static_cast<uint64_t>(INT64_MAX)) return static_cast<int64_t>(*u);
  throw LoadError(path_ + ": metadata key '" + key + "' has type " + gguf_type_name(v.type) + ", expected an integer");
}

double GgufFile::get_float(const std::string& key) const {
  const GgufValue& v = get(key, GgufType::FLOAT64);
  if (const auto* d = std::get_if<double>(&v.v)) return *d;
  throw LoadError(path_ + ": metadata key '" + key + "' has type " + gguf_type_name(v.type) + ", expected a float");
}

bool GgufFile::get_bool(const std::string& key) const {
  const GgufValue& v = get(key, GgufType::BOOL);
  if (const auto* b = std::get_if<bool>(&v.v)) return *b;
  throw LoadError(path_ + ": metadata key '" + key + "' has type " + gguf_type_name(v.type) + ", expected BOOL");
}

const std::string& GgufFile::get_string(const std::string& key) const {
  const GgufValue& v = get(key, GgufType::STRING);
  if (const auto* s = std::get_if<std::string>(&v.v)) return *s;
  throw LoadError(path_ + ": metadata key '" + key + "' has type " + gguf_type_name(v.type) + ", expected STRING");
}

const std::vector<std::string>& GgufFile::get_string_array(const std::string& key) const {
  const GgufValue& v = get(key, GgufType::ARRAY);
  if (const auto* s = std::get_if<std::vector<std::string>>(&v.v)) return *s;
  throw LoadError(path_ + ": metadata key '" + key + "' has type " + gguf_type_name(v.type) + ", expected an array of STRING");
}

const std::vector<uint8_t>& GgufFile::get_bytes(const std::string& key) const {
  const GgufValue& v = get(key, GgufType::ARRAY);
  if (const auto* s = std::get_if<std::vector<uint8_t>>(&v.v)) return *s;
  throw LoadError(path_ + ": metadata key '" + key + "' has type " + gguf_type_name(v.type) + ", expected an array of UINT8");
}

const TensorInfo* GgufFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

std::vector<const TensorInfo*> GgufFile::tensors() const {
  std::vector<const TensorInfo*> out;
  for (const auto& t : tensors_) out.push_back(&t);
  return out;
}

}  // namespace jetmoe
