// make_backend and the device checks of runtime/backend.h: the one place that knows which backends
// this binary was built with.
#include <stdexcept>

#include "ops/cpu/cpu_backend.h"
#include "runtime/backend.h"
#ifdef JETMOE_CUDA
#include "ops/cuda/cuda_backend.h"
#endif

namespace jetmoe {

DeviceAvailability device_availability(const std::string& device) {
  DeviceAvailability a;
  if (device == "cpu") {
    a.built = a.usable = true;
    return a;
  }
  if (device == "cuda") {
#ifdef JETMOE_CUDA
    a.built = true;
    a.why = cuda::cuda_unavailable_reason();
    a.usable = a.why.empty();
#else
    a.why = "this jetmoe was built without CUDA (configure with -DJETMOE_CUDA=ON)";
#endif
    return a;
  }
  a.why = "unknown device '" + device + "': expected cpu or cuda";
  return a;
}

std::vector<std::string> usable_devices() {
  std::vector<std::string> out;
  for (const char* d : {"cpu", "cuda"})
    if (device_availability(d).usable) out.emplace_back(d);
  return out;
}

std::unique_ptr<Backend> make_backend(const std::string& device) {
  if (device == "cpu") return std::make_unique<CpuBackend>();
  const DeviceAvailability a = device_availability(device);
  if (!a.usable) throw std::runtime_error(device == "cuda" ? "device 'cuda': " + a.why : a.why);
#ifdef JETMOE_CUDA
  return cuda::make_cuda_backend();
#else
  throw std::logic_error("unreachable: device '" + device + "' reported usable");
#endif
}

}  // namespace jetmoe
