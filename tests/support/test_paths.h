// Paths and small helpers shared by the tests.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace jetmoe::test {

// Every checkpoint folder with a golden.json under ../shared/golden (blind checkpoints dropped in
// there are picked up too). Fails the calling test when the folder is missing.
std::vector<std::filesystem::path> golden_checkpoints();
std::filesystem::path austen_model_dir();
std::filesystem::path test_data_dir();

nlohmann::json read_json(const std::filesystem::path& p);
// prod(shape) float32 values at offset_bytes of the `file` named by a golden array descriptor.
std::vector<float> read_golden_array(const std::filesystem::path& dir, const nlohmann::json& desc);

// A fresh empty directory under the test temp dir.
std::filesystem::path make_temp_dir(const std::string& tag);

// Runs a shell command, capturing stdout (and stderr when merge_stderr); returns the exit status.
int run_command(const std::string& cmd, std::string* out, bool merge_stderr = false);
std::string jetmoe_binary();

}  // namespace jetmoe::test
