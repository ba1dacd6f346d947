// The checkpoint's own SentencePiece tokenizer (tokenizer.model), never a substitute vocabulary.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace jetmoe {

class Tokenizer {
 public:
  // Loads `model_file`; bos/eos ids and whether to prepend BOS come from the caller (config and
  // tokenizer_config.json). Throws LoadError naming the file when it cannot be read.
  Tokenizer(const std::string& model_file, int bos_id, int eos_id, bool add_bos);
  // From the bytes of a tokenizer.model (as stored in our GGUF files); `where` names it in errors.
  static std::unique_ptr<Tokenizer> from_serialized(const std::string& proto, const std::string& where, int bos_id,
                                                    int eos_id, bool add_bos);
  // The SentencePiece model's bytes (for writing into GGUF metadata).
  std::string serialized() const;
  float score(int32_t id) const;
  // GGUF token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte.
  int32_t gguf_token_type(int32_t id) const;
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Ids for `text`, without BOS. Invalid UTF-8 is an std::invalid_argument naming the byte offset.
  std::vector<int32_t> encode(const std::string& text) const;
  // encode() with BOS prepended when the tokenizer says so.
  std::vector<int32_t> encode_prompt(const std::string& text) const;
  std::string decode(std::span<const int32_t> ids) const;
  std::string piece(int32_t id) const;
  int vocab_size() const;
  int bos_id() const { return bos_; }
  int eos_id() const { return eos_; }
  bool add_bos() const { return add_bos_; }
  const std::string& path() const { return path_; }

 private:
  struct Empty {};  // tag for the constructor from_serialized uses
 public:
  Tokenizer(Empty, int bos_id, int eos_id, bool add_bos);

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::string path_;
  int bos_, eos_;
  bool add_bos_;
};

// Turns generated ids into text as they arrive. SentencePiece joins pieces (leading-space marker,
// byte-fallback pieces that make one UTF-8 character together), so the text of a token depends on
// its neighbours: this decodes the whole generated sequence and returns only the new, complete part.
class TokenStreamer {
 public:
  explicit TokenStreamer(const Tokenizer& tok) : tok_(tok) {}
  // New text made complete by `id` (may be empty while a multi-byte character is unfinished).
  std::string push(int32_t id);
  // Whatever is still held back (call at the end).
  std::string flush();
  void reset() { ids_.clear(); emitted_ = 0; }

 private:
  const Tokenizer& tok_;
  std::vector<int32_t> ids_;
  size_t emitted_ = 0;
};

// True when `s` is valid UTF-8; otherwise *bad_offset receives the first bad byte's offset.
bool is_valid_utf8(const std::string& s, size_t* bad_offset = nullptr);

}  // namespace jetmoe
