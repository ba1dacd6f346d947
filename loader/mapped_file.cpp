#include "loader/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "loader/load_error.h"

namespace jetmoe {
namespace {

// Closes the descriptor on every path out of open().
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

const char* load_mode_name(LoadMode m) {
  switch (m) {
    case LoadMode::Mmap: return "mmap";
    case LoadMode::Read: return "read (--no-mmap)";
    case LoadMode::Mlock: return "mmap+mlock";
  }
  return "?";
}

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path, LoadMode mode) {
  std::shared_ptr<MappedFile> f(new MappedFile());
  f->path_ = path;
  f->mode_ = mode;
  Fd fd;
  fd.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd.fd < 0) throw LoadError(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.fd, &st) != 0) throw LoadError(path + ": cannot stat: " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw LoadError(path + ": not a regular file");
  f->size_ = static_cast<size_t>(st.st_size);
  if (f->size_ == 0) return f;  // nothing to map; parsers report the empty file

  if (mode == LoadMode::Read) {
    // Owned copy: immune to page-cache eviction of idle experts.
    f->owned_ = std::make_unique<uint8_t[]>(f->size_);
    size_t done = 0;
    while (done < f->size_) {
      const ssize_t n = ::read(fd.fd, f->owned_.get() + done, f->size_ - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw LoadError(path + ": read failed after " + std::to_string(done) + " bytes: " + std::strerror(errno));
      done += static_cast<size_t>(n);
    }
    f->data_ = f->owned_.get();
    return f;
  }
  void* p = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd.fd, 0);
  if (p == MAP_FAILED) throw LoadError(path + ": mmap failed: " + std::strerror(errno));
  f->data_ = static_cast<const uint8_t*>(p);
  f->mapped_ = true;
  if (mode == LoadMode::Mlock) {
    if (::mlock(p, f->size_) == 0) {
      f->locked_ = true;
    } else {
      static std::atomic<bool> warned{false};
      if (!warned.exchange(true))
        std::fprintf(stderr, "warning: %s: mlock failed (%s); the weights stay mmapped but unlocked (raise `ulimit -l`)\n",
                     path.c_str(), std::strerror(errno));
    }
  }
  return f;
}

MappedFile::~MappedFile() {
  if (locked_) ::munlock(const_cast<uint8_t*>(data_), size_);
  if (mapped_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace jetmoe
