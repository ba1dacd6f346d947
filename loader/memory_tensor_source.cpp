#include "loader/memory_tensor_source.h"

#include <cstring>
#include <stdexcept>


namespace jetmoe {

std::unique_ptr<MemoryTensorSource> MemoryTensorSource::copy_of(const TensorSource& src) {
  auto m = std::make_unique<MemoryTensorSource>(src.description() + " (in memory)");
  for (const TensorInfo* t : src.tensors()) {
    uint8_t* dst = m->add(t->name, t->dtype, t->shape, t->nbytes);
    if (t->nbytes) std::memcpy(dst, t->data, t->nbytes);
  }
  return m;
}

uint8_t* MemoryTensorSource::add(const std::string& name, DType dtype, std::vector<int64_t> shape, size_t nbytes) {
  if (by_name_.count(name)) throw std::invalid_argument("duplicate tensor '" + name + "'");
  auto e = std::make_unique<Entry>();
  e->bytes = AlignedBuffer(nbytes);  // zero-filled
  e->info.name = name;
  e->info.dtype = dtype;
  e->info.shape = std::move(shape);
  e->info.data = e->bytes.data();
  e->info.nbytes = nbytes;
  e->info.file = description_;
  by_name_[name] = e.get();
  bytes_ += nbytes;
  entries_.push_back(std::move(e));
  return entries_.back()->bytes.data();
}

uint8_t* MemoryTensorSource::mutable_data(const std::string& name) {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) throw std::out_of_range("no tensor '" + name + "'");
  return it->second->bytes.data();
}

void MemoryTensorSource::repack_for_cpu() {
  for (auto& e : entries_) repack_tensor_for_cpu(e->info, e->bytes.data());
}

const TensorInfo* MemoryTensorSource::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &it->second->info;
}

std::vector<const TensorInfo*> MemoryTensorSource::tensors() const {
  std::vector<const TensorInfo*> out;
  for (const auto& e : entries_) out.push_back(&e->info);
  return out;
}

}  // namespace jetmoe
