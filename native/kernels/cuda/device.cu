// device.cu — the CUDA runtime behind kernels_cuda.h: is a device there (and if not, why), memory,
// copies and the error check that turns a failed launch into a Status.
#include <cstdio>
#include <mutex>
#include <string>

#include "kernels/cuda/common.cuh"

namespace mend {
namespace cuda {
namespace {

Status from(cudaError_t e, const std::string& what) {
  if (e == cudaSuccess) return Status::OK();
  return Status::Error(code::kInternal, what + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

}  // namespace

bool device_available(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();  // not sticky: clear it so later checks do not report it
    if (why) {
      int drv = 0, rt = 0;
      cudaDriverGetVersion(&drv);
      cudaRuntimeGetVersion(&rt);
      cudaGetLastError();
      auto ver = [](int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); };
      std::string hint;
      if (drv == 0) hint = "no NVIDIA driver (libcuda.so) was found";
      else if (e == cudaErrorInsufficientDriver) hint = "the NVIDIA driver supports CUDA " + ver(drv) + ", older than this build's runtime " + ver(rt);
      else if (e == cudaErrorNoDevice) hint = "the driver (CUDA " + ver(drv) + ") sees no GPU";
      *why = "the CUDA runtime found no usable GPU: " + (hint.empty() ? std::string() : hint + "; ") + cudaGetErrorName(e) + " (" +
             cudaGetErrorString(e) + ")";
    }
    return false;
  }
  if (n == 0) {
    if (why) *why = "the CUDA runtime reports 0 devices";
    return false;
  }
  return true;
}

std::string device_description() {
  std::string why;
  if (!device_available(&why)) return "";
  cudaDeviceProp p;
  if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) return "";
  char buf[512];
  std::snprintf(buf, sizeof buf, "%.200s (sm_%d%d, %d SMs, %.1f GiB)", p.name, p.major, p.minor, p.multiProcessorCount,
                p.totalGlobalMem / 1073741824.0);
  return buf;
}

namespace {
std::mutex g_noted_mu;
std::string g_noted;  // the first note_error() message not yet reported
}  // namespace

void note_error(const std::string& message) {
  std::lock_guard<std::mutex> lock(g_noted_mu);
  if (g_noted.empty()) g_noted = message;
}

Status synchronize(const char* what) {
  {
    std::lock_guard<std::mutex> lock(g_noted_mu);
    if (!g_noted.empty()) {
      Status s = Status::Error(code::kInternal, std::string(what) + ": " + g_noted);
      g_noted.clear();
      return s;
    }
  }
  MEND_RETURN_IF_ERROR(from(cudaGetLastError(), std::string(what) + " (launch)"));
  return from(cudaStreamSynchronize(stream()), what);
}

Status device_alloc(void** p, size_t bytes) {
  return from(cudaMalloc(p, bytes ? bytes : 1), "cudaMalloc of " + std::to_string(bytes) + " bytes");
}

void device_free(void* p) {
  if (p) cudaFree(p);
}

Status copy_to_device(void* dst, const void* src, size_t bytes) {
  MEND_RETURN_IF_ERROR(from(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream()), "copy to the device"));
  return from(cudaStreamSynchronize(stream()), "copy to the device");
}

Status copy_to_host(void* dst, const void* src, size_t bytes) {
  MEND_RETURN_IF_ERROR(from(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream()), "copy to the host"));
  return from(cudaStreamSynchronize(stream()), "copy to the host");
}

Status copy_device(void* dst, const void* src, size_t bytes) {
  return from(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream()), "device-to-device copy");
}

Status device_memset(void* dst, int value, size_t bytes) {
  return from(cudaMemsetAsync(dst, value, bytes, stream()), "cudaMemset");
}

}  // namespace cuda
}  // namespace mend
