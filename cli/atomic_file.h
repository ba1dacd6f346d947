// Files that appear complete or not at all: written beside the target, fsynced, renamed.
#pragma once

#include <string>

namespace jetmoe::cli {

// Writes `content` to `path` atomically; throws std::runtime_error naming the path on failure.
void write_file_atomic(const std::string& path, const std::string& content);

// fsync + rename(from, to); throws naming both paths.
void commit_file(const std::string& from, const std::string& to);

}  // namespace jetmoe::cli
