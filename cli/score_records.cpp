#include "cli/score_records.h"

#include <iostream>
#include <sstream>
#include <stdexcept>

#include "runtime/tokenizer.h"

namespace jetmoe::cli {

InputFormat guess_format(const std::string& file) {
  auto ends = [&](const char* s) {
    const std::string e(s);
    return file.size() >= e.size() && file.compare(file.size() - e.size(), e.size(), e) == 0;
  };
  return ends(".jsonl") || ends(".json") || ends(".ndjson") ? InputFormat::Jsonl : InputFormat::Text;
}

RecordReader::RecordReader(std::vector<std::string> files, RecordReaderOptions opts)
    : files_(std::move(files)), opts_(std::move(opts)) {
  if (files_.empty()) files_.push_back("-");
}

bool RecordReader::open_next() {
  while (file_idx_ < files_.size()) {
    const std::string& f = files_[file_idx_];
    line_no_ = 0;
    whole_done_ = false;
    if (f == "-") {
      in_file_.reset();
      in_ = &std::cin;
      return true;
    }
    in_file_ = std::make_unique<std::ifstream>(f, std::ios::binary);
    if (!*in_file_) throw std::runtime_error(f + ": cannot open for reading");
    in_ = in_file_.get();
    return true;
  }
  return false;
}

void RecordReader::parse_json_record(const std::string& line, ScoreRecord& rec) const {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    rec.error = "not valid JSON: " + std::string(e.what());
    return;
  }
  if (!j.is_object()) {
    rec.error = "expected a JSON object";
    return;
  }
  if (j.contains(opts_.id_field)) rec.id = j[opts_.id_field];
  auto get = [&](const std::string& key, std::string& out) {
    if (!j.contains(key)) {
      rec.error = "missing field '" + key + "'";
      return false;
    }
    if (!j[key].is_string()) {
      rec.error = "field '" + key + "' is not a string";
      return false;
    }
    out = j[key].get<std::string>();
    return true;
  };
  if (opts_.pairs) {
    if (get("context", rec.context) && get("continuation", rec.continuation) && rec.continuation.empty())
      rec.error = "empty continuation";
  } else {
    get(opts_.field, rec.text);
  }
}

bool RecordReader::next(ScoreRecord& rec) {
  for (;;) {
    if (in_ == nullptr && !open_next()) return false;
    rec = ScoreRecord();
    rec.file = files_[file_idx_] == "-" ? "<stdin>" : files_[file_idx_];
    if (opts_.whole_file) {
      if (whole_done_) {
        in_ = nullptr;
        ++file_idx_;
        continue;
      }
      std::ostringstream ss;
      ss << in_->rdbuf();
      whole_done_ = true;
      rec.text = ss.str();
      rec.id = rec.file;
    } else {
      std::string line;
      if (!std::getline(*in_, line)) {
        in_ = nullptr;
        ++file_idx_;
        continue;
      }
      ++line_no_;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      rec.id = line_no_;
      if (line.size() > opts_.max_bytes) {
        rec.error = "record of " + std::to_string(line.size()) + " bytes is over the " + std::to_string(opts_.max_bytes) + "-byte limit";
      } else if (opts_.format == InputFormat::Jsonl || opts_.pairs) {
        if (line.find_first_not_of(" \t") == std::string::npos) rec.error = "empty line";
        else parse_json_record(line, rec);
      } else {
        rec.text = std::move(line);
      }
    }
    if (rec.error.empty() && !opts_.pairs && rec.text.empty()) rec.error = "empty record";
    size_t bad = 0;
    if (rec.error.empty()) {
      for (const std::string* s : {&rec.text, &rec.context, &rec.continuation})
        if (!is_valid_utf8(*s, &bad)) {
          rec.error = "not valid UTF-8 (byte offset " + std::to_string(bad) + ")";
          break;
        }
    }
    rec.index = index_++;
    return true;
  }
}

int64_t RecordReader::count(const std::vector<std::string>& files, const RecordReaderOptions& opts) {
  int64_t n = 0;
  for (const std::string& f : files) {
    if (f == "-") return 0;
    if (opts.whole_file) {
      ++n;
      continue;
    }
    std::ifstream in(f, std::ios::binary);
    if (!in) return 0;
    std::string line;
    while (std::getline(in, line)) ++n;
  }
  return n;
}

}  // namespace jetmoe::cli
