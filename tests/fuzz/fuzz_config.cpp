// libFuzzer: config.json and generation_config.json parsing on arbitrary text. Only LoadError
// (or the JSON parser's own exception for non-JSON input) may come out.
#include <cstddef>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "loader/hf_config.h"
#include "loader/load_error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(data, data + size);
  } catch (const nlohmann::json::exception&) {
    return 0;
  }
  try {
    jetmoe::parse_hf_config(j, "config.json");
  } catch (const jetmoe::LoadError&) {
  }
  try {
    jetmoe::parse_generation_config(j, "generation_config.json");
  } catch (const jetmoe::LoadError&) {
  }
  return 0;
}
