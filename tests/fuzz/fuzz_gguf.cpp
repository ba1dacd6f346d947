// libFuzzer: the GGUF reader on arbitrary bytes. Only LoadError may come out, and every tensor it
// accepts must lie inside the buffer (ASan checks the reads below).
#include <cstddef>
#include <cstdint>

#include "loader/gguf_file.h"
#include "loader/load_error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto f = jetmoe::GgufFile::parse(data, size, "fuzz.gguf");
    volatile uint8_t sink = 0;
    for (const auto* t : f->tensors()) {
      for (size_t i = 0; i < t->nbytes; i += 97) sink = sink ^ t->data[i];
      if (t->nbytes) sink = sink ^ t->data[t->nbytes - 1];
    }
    for (const auto& [k, v] : f->metadata()) sink = sink ^ static_cast<uint8_t>(k.size());
  } catch (const jetmoe::LoadError&) {
  }
  return 0;
}
