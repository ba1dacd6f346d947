// A read-only file in memory: mmapped (default, fast start), read into an owned buffer
// (--no-mmap: immune to page-cache eviction), or mmapped and locked (--mlock).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace jetmoe {

enum class LoadMode { Mmap, Read, Mlock };

const char* load_mode_name(LoadMode m);

class MappedFile {
 public:
  // Throws LoadError("<path>: <strerror>") when the file cannot be opened, sized or mapped.
  static std::shared_ptr<MappedFile> open(const std::string& path, LoadMode mode = LoadMode::Mmap);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  // The bytes, writable: only for LoadMode::Read (an owned copy); nullptr for mappings.
  uint8_t* owned_data() { return owned_.get(); }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  LoadMode mode() const { return mode_; }

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  LoadMode mode_ = LoadMode::Mmap;
  bool mapped_ = false;   // munmap on destruction
  bool locked_ = false;   // munlock on destruction
  std::unique_ptr<uint8_t[]> owned_;  // LoadMode::Read
};

}  // namespace jetmoe
