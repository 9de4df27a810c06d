// safetensors.h — reader (private copy or opt-in mmap, fully validated header) and writer for the safetensors format:
// 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets:[b,e]},
// "__metadata__": {string: string}}, then the data. Offsets are relative to the end of the header.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/common.h"

namespace mend {

enum class DType { F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL };
const char* dtype_name(DType d);
size_t dtype_size(DType d);

struct SafeTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // points into the mapping; may be unaligned
  size_t nbytes = 0;
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Reads `path` (a regular file: a FIFO or device is code::kIO, never waited on) into private
  // memory, or with map_file memory-maps it (the file must not change while loaded), and validates:
  // header length within the file, JSON well formed, every entry has a known dtype, a shape of
  // non-negative ints and offsets [b,e] with b <= e <= data size, e - b == numel * dtype size, no two
  // tensors overlapping, the data fully indexed (contiguous from 0, no hole, no trailing bytes).
  // Errors: code::kIO, code::kSafetensors, each message naming the file (and the tensor).
  static Status open(const std::string& path, std::unique_ptr<SafetensorsFile>* out, bool map_file = false);
  // The same checks over bytes in memory (copied), `name` standing for the path in messages (the
  // fuzz targets and the corpus replay use it).
  static Status from_memory(const std::string& name, const void* data, size_t size, std::unique_ptr<SafetensorsFile>* out);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;             // owns a mapping: never copied
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, SafeTensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool mapped() const { return mapped_; }  // the tensors lie in a read-only file mapping (else private memory)
  const SafeTensor* find(const std::string& name) const;

  // Float32 view of a tensor: when it is F32 and 4-byte aligned, a pointer into the mapping
  // (no copy, *owned stays empty); otherwise F16/BF16/F64/F32 are converted into *owned. Other
  // dtypes are an error (code::kSafetensors naming the tensor).
  Status as_f32(const SafeTensor& t, const float** data, std::vector<float>* owned) const;
  // The caller never reads these bytes of the file's private copy again (a tensor kept in another
  // form): their whole pages are given back to the system (Linux: madvise MADV_DONTNEED; a no-op for
  // a mapped file and elsewhere). Reading them afterwards gives zeros.
  void discard(const void* p, size_t bytes) const;

 private:
  SafetensorsFile() = default;
  static Status validate(std::unique_ptr<SafetensorsFile> f, size_t file_size, std::unique_ptr<SafetensorsFile>* out);
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  bool mapped_ = false;  // map_ is an mmap (else malloc)
  std::map<std::string, SafeTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

struct TensorToWrite {
  std::string name;
  std::vector<int64_t> shape;
  const float* data;  // F32, numel(shape) floats
};
// Writes F32 tensors (in the given order) and string metadata to `path` atomically: a temporary
// file of its own (O_EXCL), fsync, rename, then the directory is synced; a failed or interrupted
// write leaves `path` as it was. The header is padded with spaces to a multiple of 8 bytes so F32 data stays aligned.
Status safetensors_write(const std::string& path, const std::vector<TensorToWrite>& tensors,
                         const std::map<std::string, std::string>& metadata);

// Half-precision conversions (used by as_f32 and exposed for tests).
float f16_to_f32(uint16_t h);
float bf16_to_f32(uint16_t h);

}  // namespace mend
