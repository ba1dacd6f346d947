// Records for `jetmoe score`: one document per line, whole files, or JSONL (a text field, or
// context/continuation pairs), from files or stdin. Bad records come back with an error instead
// of stopping the reader.
#pragma once

#include <cstdint>
#include <fstream>
#include <istream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace jetmoe::cli {

enum class InputFormat { Text, Jsonl };

struct ScoreRecord {
  int64_t index = 0;            // 0-based, over all inputs, bad records included (shards use it)
  nlohmann::json id;            // the record's `id` field, or its line number
  std::string file;             // input name
  std::string text;             // text mode / JSONL text field
  std::string context, continuation;  // pairs mode
  std::string error;            // non-empty: the record is bad and is skipped
};

struct RecordReaderOptions {
  InputFormat format = InputFormat::Text;
  bool whole_file = false;
  bool pairs = false;
  std::string field = "text";
  std::string id_field = "id";
  size_t max_bytes = 64u << 20;  // a record longer than this is an error, not an allocation
};

class RecordReader {
 public:
  RecordReader(std::vector<std::string> files, RecordReaderOptions opts);
  // False at the end of the last input.
  bool next(ScoreRecord& rec);
  // Counts the records without scoring (for progress ETA); inputs that are stdin count as 0.
  static int64_t count(const std::vector<std::string>& files, const RecordReaderOptions& opts);

 private:
  bool open_next();
  void parse_json_record(const std::string& line, ScoreRecord& rec) const;

  std::vector<std::string> files_;
  RecordReaderOptions opts_;
  size_t file_idx_ = 0;
  std::unique_ptr<std::ifstream> in_file_;
  std::istream* in_ = nullptr;
  int64_t line_no_ = 0;
  int64_t index_ = 0;
  bool whole_done_ = false;
};

InputFormat guess_format(const std::string& file);

}  // namespace jetmoe::cli
