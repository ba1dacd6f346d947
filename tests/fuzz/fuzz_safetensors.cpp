// libFuzzer: the safetensors header parser on arbitrary bytes. Only LoadError may come out, and
// every tensor it accepts must lie inside the buffer (ASan checks the reads below).
#include <cstddef>
#include <cstdint>

#include "loader/load_error.h"
#include "loader/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto f = jetmoe::SafetensorsFile::parse(data, size, "fuzz.safetensors");
    volatile uint8_t sink = 0;
    for (const auto& t : f->tensors())
      for (size_t i = 0; i < t.nbytes; i += 61) sink = sink ^ t.data[i];
    for (const auto& t : f->tensors())
      if (t.nbytes) sink = sink ^ t.data[t.nbytes - 1];
  } catch (const jetmoe::LoadError&) {
  }
  return 0;
}
