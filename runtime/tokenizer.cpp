#include "runtime/tokenizer.h"

#include <sentencepiece_processor.h>

#include <stdexcept>

#include "loader/load_error.h"

namespace jetmoe {

bool is_valid_utf8(const std::string& s, size_t* bad_offset) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    size_t len;
    uint32_t cp;
    if (c < 0x80) { ++i; continue; }
    if ((c & 0xe0) == 0xc0) { len = 2; cp = c & 0x1f; }
    else if ((c & 0xf0) == 0xe0) { len = 3; cp = c & 0x0f; }
    else if ((c & 0xf8) == 0xf0) { len = 4; cp = c & 0x07; }
    else { if (bad_offset) *bad_offset = i; return false; }
    if (i + len > n) { if (bad_offset) *bad_offset = i; return false; }
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xc0) != 0x80) { if (bad_offset) *bad_offset = i; return false; }
      cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    const bool overlong = (len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000);
    if (overlong || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) { if (bad_offset) *bad_offset = i; return false; }
    i += len;
  }
  return true;
}

Tokenizer::Tokenizer(const std::string& model_file, int bos_id, int eos_id, bool add_bos)
    : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()),
      path_(model_file),
      bos_(bos_id),
      eos_(eos_id),
      add_bos_(add_bos) {
  const auto status = sp_->Load(model_file);
  if (!status.ok()) throw LoadError(model_file + ": cannot load the SentencePiece model: " + status.ToString());
}

Tokenizer::Tokenizer(Empty, int bos_id, int eos_id, bool add_bos)
    : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()), bos_(bos_id), eos_(eos_id), add_bos_(add_bos) {}

std::unique_ptr<Tokenizer> Tokenizer::from_serialized(const std::string& proto, const std::string& where, int bos_id,
                                                      int eos_id, bool add_bos) {
  auto t = std::make_unique<Tokenizer>(Empty{}, bos_id, eos_id, add_bos);
  t->path_ = where;
  const auto status = t->sp_->LoadFromSerializedProto(proto);
  if (!status.ok()) throw LoadError(where + ": cannot load the SentencePiece model: " + status.ToString());
  return t;
}

std::string Tokenizer::serialized() const { return sp_->serialized_model_proto(); }

float Tokenizer::score(int32_t id) const { return sp_->GetScore(id); }

int32_t Tokenizer::gguf_token_type(int32_t id) const {
  if (sp_->IsUnknown(id)) return 2;
  if (sp_->IsControl(id)) return 3;
  if (sp_->IsByte(id)) return 6;
  if (sp_->IsUnused(id)) return 5;
  const std::string p = sp_->IdToPiece(id);
  // User-defined pieces (e.g. the chat markers) are whole-piece matches in SentencePiece.
  return p.size() > 2 && p.front() == '<' && p.back() == '>' && p.find("|") != std::string::npos ? 4 : 1;
}

Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::encode(const std::string& text) const {
  size_t bad = 0;
  if (!is_valid_utf8(text, &bad))
    throw std::invalid_argument("input text is not valid UTF-8 (bad byte at offset " + std::to_string(bad) + ")");
  std::vector<int> ids;
  const auto status = sp_->Encode(text, &ids);
  if (!status.ok()) throw std::runtime_error("tokenizer: " + status.ToString());
  return std::vector<int32_t>(ids.begin(), ids.end());
}

std::vector<int32_t> Tokenizer::encode_prompt(const std::string& text) const {
  std::vector<int32_t> ids = encode(text);
  if (add_bos_) ids.insert(ids.begin(), bos_);
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  std::vector<int> v;
  v.reserve(ids.size());
  const int n = vocab_size();
  for (int32_t id : ids) {
    if (id < 0 || id >= n) throw std::out_of_range("token id " + std::to_string(id) + " is outside the vocabulary");
    v.push_back(id);
  }
  std::string out;
  const auto status = sp_->Decode(v, &out);
  if (!status.ok()) throw std::runtime_error("tokenizer: " + status.ToString());
  return out;
}

std::string Tokenizer::piece(int32_t id) const {
  if (id < 0 || id >= vocab_size()) throw std::out_of_range("token id " + std::to_string(id) + " is outside the vocabulary");
  return sp_->IdToPiece(id);
}

int Tokenizer::vocab_size() const { return sp_->GetPieceSize(); }

std::string TokenStreamer::push(int32_t id) {
  ids_.push_back(id);
  const std::string text = tok_.decode(ids_);
  // Hold back a trailing replacement character: it may be a byte-fallback character whose
  // remaining bytes arrive with the next token.
  size_t complete = text.size();
  static const std::string kReplacement = "\xEF\xBF\xBD";
  if (complete >= 3 && text.compare(complete - 3, 3, kReplacement) == 0) complete -= 3;
  if (complete <= emitted_) return {};
  std::string out = text.substr(emitted_, complete - emitted_);
  emitted_ = complete;
  return out;
}

std::string TokenStreamer::flush() {
  if (ids_.empty()) return {};
  const std::string text = tok_.decode(ids_);
  std::string out = text.size() > emitted_ ? text.substr(emitted_) : std::string();
  emitted_ = text.size();
  return out;
}

}  // namespace jetmoe
