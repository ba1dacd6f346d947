// The first processor's vendor, family and model as Linux's /proc/cpuinfo prints them: a source
// independent of the runtime's own CPUID code (ops/cpu/cpu_isa.h), for the tests of what depends
// on the CPU model. Header-only, like the other small helpers here.
#pragma once

#include <fstream>
#include <optional>
#include <string>

namespace jetmoe::test {

struct ProcCpu {
  std::string vendor;
  int family = -1, model = -1;
};

// Empty where the file is missing or lacks those lines (not Linux, not x86).
inline std::optional<ProcCpu> proc_cpuinfo() {
  std::ifstream in("/proc/cpuinfo");
  ProcCpu c;
  std::string line;
  const auto value = [&](const std::string& key) -> std::optional<std::string> {
    if (line.compare(0, key.size(), key) != 0) return std::nullopt;
    const size_t colon = line.find(':', key.size());
    if (colon == std::string::npos || line.find_first_not_of(" \t", key.size()) != colon) return std::nullopt;
    const size_t start = line.find_first_not_of(' ', colon + 1);
    return start == std::string::npos ? std::string() : line.substr(start);
  };
  while (std::getline(in, line)) {
    if (line.empty()) break;  // the end of the first processor's block
    if (auto v = value("vendor_id")) c.vendor = *v;
    else if (auto f = value("cpu family")) c.family = std::stoi(*f);
    else if (auto m = value("model")) c.model = std::stoi(*m);
  }
  if (c.vendor.empty() || c.family < 0 || c.model < 0) return std::nullopt;
  return c;
}

// An Ice Lake Xeon (Intel family 6, model 106 or 108), per /proc/cpuinfo.
inline bool proc_cpu_is_ice_lake_xeon() {
  const auto c = proc_cpuinfo();
  return c && c->vendor == "GenuineIntel" && c->family == 6 && (c->model == 106 || c->model == 108);
}

}  // namespace jetmoe::test
