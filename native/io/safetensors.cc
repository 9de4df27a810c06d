// safetensors.cc — the safetensors reader (mmap + a strict, fully validated header) and writer.
// The header comes from an untrusted file: nothing in it is used before it has been checked, and
// every failure is a Status naming the file (and the tensor) rather than a crash.
#include "io/safetensors.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <set>

#ifdef _WIN32
#include <process.h>
#else
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

namespace mend {

const char* dtype_name(DType d) {
  switch (d) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F64: return "F64";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::BOOL: return "BOOL";
  }
  return "?";
}

size_t dtype_size(DType d) {
  switch (d) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: case DType::I16: return 2;
    case DType::I8: case DType::U8: case DType::BOOL: return 1;
  }
  return 1;
}

static bool parse_dtype(const std::string& s, DType* d) {
  static const DType all[] = {DType::F32, DType::F16, DType::BF16, DType::F64, DType::I64,
                              DType::I32, DType::I16, DType::I8,   DType::U8,  DType::BOOL};
  for (DType x : all)
    if (s == dtype_name(x)) { *d = x; return true; }
  return false;
}

int64_t SafeTensor::numel() const {
  // Validated against overflow when the file was opened; a zero dimension wins over huge ones.
  if (std::find(shape.begin(), shape.end(), 0) != shape.end()) return 0;
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h >> 15) << 31;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24 is exact in float32.
    float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf, or NaN keeping its payload
  } else {
    bits = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float bf16_to_f32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest like a hardware conversion, without the undefined behaviour of casting a
// finite double beyond the float range: those round to ±FLT_MAX or, from the midpoint up, to ±inf.
static float double_to_f32(double d) {
  const double a = std::fabs(d);
  if (std::isfinite(d) && a > std::numeric_limits<float>::max()) {
    const float big = a >= 0x1.ffffffp127 ? std::numeric_limits<float>::infinity() : std::numeric_limits<float>::max();
    return d < 0 ? -big : big;
  }
  return static_cast<float>(d);
}

// ---------------------------------------------------------------------------------------------
// A strict JSON parser for the header: RFC 8259 syntax, UTF-8 checked, duplicate keys rejected,
// nesting depth bounded. Numbers are kept as integers when they are written as integers.

namespace {

struct JValue {
  enum Kind { kNull, kBool, kInt, kFloat, kString, kArray, kObject } kind = kNull;
  bool b = false;
  int64_t i = 0;  // kInt
  std::string s;  // kString
  std::vector<JValue> arr;
  std::vector<std::pair<std::string, JValue>> obj;  // in file order
};

const char* kind_name(JValue::Kind k) {
  switch (k) {
    case JValue::kNull: return "null";
    case JValue::kBool: return "a boolean";
    case JValue::kInt: return "an integer";
    case JValue::kFloat: return "a non-integer number";
    case JValue::kString: return "a string";
    case JValue::kArray: return "an array";
    case JValue::kObject: return "an object";
  }
  return "?";
}

class JsonParser {
 public:
  JsonParser(const char* p, size_t n) : p_(p), end_(p + n), begin_(p) {}

  // Parses one value followed only by whitespace. On failure returns false and sets error().
  bool parse_document(JValue* out) {
    skip_ws();
    if (!parse_value(out, 0)) return false;
    skip_ws();
    if (p_ != end_) return fail("unexpected trailing characters");
    return true;
  }
  const std::string& error() const { return error_; }

 private:
  static constexpr int kMaxDepth = 64;

  bool fail(const std::string& what) {
    if (error_.empty()) error_ = what + " at byte " + std::to_string(p_ - begin_) + " of the header";
    return false;
  }
  void skip_ws() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }
  bool literal(const char* word) {
    size_t n = std::strlen(word);
    if (static_cast<size_t>(end_ - p_) < n || std::memcmp(p_, word, n) != 0) return fail("invalid literal");
    p_ += n;
    return true;
  }

  bool parse_value(JValue* out, int depth) {
    if (depth > kMaxDepth) return fail("nesting deeper than " + std::to_string(kMaxDepth));
    if (p_ >= end_) return fail("unexpected end of JSON");
    switch (*p_) {
      case '{': return parse_object(out, depth);
      case '[': return parse_array(out, depth);
      case '"': out->kind = JValue::kString; return parse_string(&out->s);
      case 't': out->kind = JValue::kBool; out->b = true; return literal("true");
      case 'f': out->kind = JValue::kBool; out->b = false; return literal("false");
      case 'n': out->kind = JValue::kNull; return literal("null");
      default:
        if (*p_ == '-' || (*p_ >= '0' && *p_ <= '9')) return parse_number(out);
        return fail("unexpected character");
    }
  }

  bool parse_object(JValue* out, int depth) {
    out->kind = JValue::kObject;
    ++p_;  // '{'
    skip_ws();
    if (p_ < end_ && *p_ == '}') { ++p_; return true; }
    std::set<std::string> seen;
    for (;;) {
      skip_ws();
      if (p_ >= end_ || *p_ != '"') return fail("expected a string key");
      std::string key;
      if (!parse_string(&key)) return false;
      if (!seen.insert(key).second) return fail("duplicate key \"" + key + "\"");
      skip_ws();
      if (p_ >= end_ || *p_ != ':') return fail("expected ':'");
      ++p_;
      skip_ws();
      out->obj.emplace_back(std::move(key), JValue());
      if (!parse_value(&out->obj.back().second, depth + 1)) return false;
      skip_ws();
      if (p_ >= end_) return fail("unexpected end of JSON");
      if (*p_ == ',') { ++p_; continue; }
      if (*p_ == '}') { ++p_; return true; }
      return fail("expected ',' or '}'");
    }
  }

  bool parse_array(JValue* out, int depth) {
    out->kind = JValue::kArray;
    ++p_;  // '['
    skip_ws();
    if (p_ < end_ && *p_ == ']') { ++p_; return true; }
    for (;;) {
      skip_ws();
      out->arr.emplace_back();
      if (!parse_value(&out->arr.back(), depth + 1)) return false;
      skip_ws();
      if (p_ >= end_) return fail("unexpected end of JSON");
      if (*p_ == ',') { ++p_; continue; }
      if (*p_ == ']') { ++p_; return true; }
      return fail("expected ',' or ']'");
    }
  }

  bool parse_number(JValue* out) {
    bool neg = false;
    if (*p_ == '-') { neg = true; ++p_; }
    if (p_ >= end_ || *p_ < '0' || *p_ > '9') return fail("invalid number");
    if (*p_ == '0' && p_ + 1 < end_ && p_[1] >= '0' && p_[1] <= '9') return fail("number with a leading zero");
    uint64_t mag = 0;
    bool overflow = false;
    while (p_ < end_ && *p_ >= '0' && *p_ <= '9') {
      uint64_t d = static_cast<uint64_t>(*p_ - '0');
      if (mag > (std::numeric_limits<uint64_t>::max() - d) / 10) overflow = true;
      else mag = mag * 10 + d;
      ++p_;
    }
    bool is_int = true;
    if (p_ < end_ && *p_ == '.') {
      is_int = false;
      ++p_;
      if (p_ >= end_ || *p_ < '0' || *p_ > '9') return fail("invalid number");
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
      is_int = false;
      ++p_;
      if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (p_ >= end_ || *p_ < '0' || *p_ > '9') return fail("invalid number");
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    if (!is_int) { out->kind = JValue::kFloat; return true; }
    const uint64_t limit = neg ? uint64_t{1} << 63 : static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    if (overflow || mag > limit) return fail("integer out of the 64-bit range");
    out->kind = JValue::kInt;
    out->i = neg ? static_cast<int64_t>(0 - mag) : static_cast<int64_t>(mag);
    return true;
  }

  static void append_utf8(std::string* s, uint32_t cp) {
    if (cp < 0x80) {
      s->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      s->push_back(static_cast<char>(0xc0 | (cp >> 6)));
      s->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    } else if (cp < 0x10000) {
      s->push_back(static_cast<char>(0xe0 | (cp >> 12)));
      s->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
      s->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    } else {
      s->push_back(static_cast<char>(0xf0 | (cp >> 18)));
      s->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
      s->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
      s->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    }
  }

  bool parse_hex4(uint32_t* v) {
    if (end_ - p_ < 4) return fail("truncated \\u escape");
    uint32_t x = 0;
    for (int k = 0; k < 4; ++k) {
      char c = p_[k];
      x <<= 4;
      if (c >= '0' && c <= '9') x |= static_cast<uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f') x |= static_cast<uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') x |= static_cast<uint32_t>(c - 'A' + 10);
      else return fail("invalid \\u escape");
    }
    p_ += 4;
    *v = x;
    return true;
  }

  // Validates one UTF-8 sequence starting at p_ (a lead byte >= 0x80) and copies it.
  bool copy_utf8(std::string* s) {
    const unsigned char c = static_cast<unsigned char>(*p_);
    int len;
    uint32_t cp, min;
    if (c >= 0xc2 && c <= 0xdf) { len = 2; cp = c & 0x1f; min = 0x80; }
    else if (c >= 0xe0 && c <= 0xef) { len = 3; cp = c & 0x0f; min = 0x800; }
    else if (c >= 0xf0 && c <= 0xf4) { len = 4; cp = c & 0x07; min = 0x10000; }
    else return fail("invalid UTF-8");
    if (end_ - p_ < len) return fail("invalid UTF-8");
    for (int k = 1; k < len; ++k) {
      const unsigned char cc = static_cast<unsigned char>(p_[k]);
      if ((cc & 0xc0) != 0x80) return fail("invalid UTF-8");
      cp = (cp << 6) | (cc & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return fail("invalid UTF-8");
    s->append(p_, static_cast<size_t>(len));
    p_ += len;
    return true;
  }

  bool parse_string(std::string* s) {
    ++p_;  // opening quote
    for (;;) {
      if (p_ >= end_) return fail("unterminated string");
      const unsigned char c = static_cast<unsigned char>(*p_);
      if (c == '"') { ++p_; return true; }
      if (c < 0x20) return fail("control character in a string");
      if (c >= 0x80) { if (!copy_utf8(s)) return false; continue; }
      if (c != '\\') { s->push_back(static_cast<char>(c)); ++p_; continue; }
      ++p_;
      if (p_ >= end_) return fail("unterminated string");
      const char e = *p_++;
      switch (e) {
        case '"': s->push_back('"'); break;
        case '\\': s->push_back('\\'); break;
        case '/': s->push_back('/'); break;
        case 'b': s->push_back('\b'); break;
        case 'f': s->push_back('\f'); break;
        case 'n': s->push_back('\n'); break;
        case 'r': s->push_back('\r'); break;
        case 't': s->push_back('\t'); break;
        case 'u': {
          uint32_t cp = 0;
          if (!parse_hex4(&cp)) return false;
          if (cp >= 0xdc00 && cp <= 0xdfff) return fail("unpaired low surrogate");
          if (cp >= 0xd800 && cp <= 0xdbff) {
            uint32_t lo = 0;
            if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') return fail("unpaired high surrogate");
            p_ += 2;
            if (!parse_hex4(&lo)) return false;
            if (lo < 0xdc00 || lo > 0xdfff) return fail("unpaired high surrogate");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          }
          append_utf8(s, cp);
          break;
        }
        default: return fail("invalid escape");
      }
    }
  }

  const char* p_;
  const char* end_;
  const char* begin_;
  std::string error_;
};

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t k = 0; k < shape.size(); ++k) {
    if (k) s += ",";
    s += std::to_string(shape[k]);
  }
  return s + "]";
}

// JSON string literal with the escapes JSON requires (UTF-8 passes through unchanged).
void append_json_string(std::string* out, const std::string& s) {
  out->push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"': *out += "\\\""; break;
      case '\\': *out += "\\\\"; break;
      case '\n': *out += "\\n"; break;
      case '\r': *out += "\\r"; break;
      case '\t': *out += "\\t"; break;
      case '\b': *out += "\\b"; break;
      case '\f': *out += "\\f"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          *out += buf;
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  out->push_back('"');
}

std::string sys_error() { return std::strerror(errno); }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Reader

SafetensorsFile::~SafetensorsFile() {
  if (!map_) return;
#ifndef _WIN32
  if (mapped_) { munmap(map_, map_size_); return; }
#endif
  std::free(map_);
}

void SafetensorsFile::discard(const void* p, size_t bytes) const {
#ifdef __linux__
  const uintptr_t lo = reinterpret_cast<uintptr_t>(map_), hi = lo + map_size_;
  const uintptr_t b = reinterpret_cast<uintptr_t>(p), e = b + bytes;
  if (mapped_ || !map_ || b < lo || e > hi) return;
  const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  const uintptr_t pb = (b + page - 1) / page * page, pe = e / page * page;  // whole pages inside
  if (pe > pb) madvise(reinterpret_cast<void*>(pb), pe - pb, MADV_DONTNEED);
#else
  (void)p;
  (void)bytes;
#endif
}

const SafeTensor* SafetensorsFile::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

Status SafetensorsFile::open(const std::string& path, std::unique_ptr<SafetensorsFile>* out, bool map_file) {
  auto io_error = [&](const std::string& what) { return Status::Error(code::kIO, path + ": " + what); };

  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;

#ifdef _WIN32
  // No mmap here: read the whole file into memory.
  std::FILE* fp = std::fopen(path.c_str(), "rb");
  if (!fp) return io_error("cannot open: " + sys_error());
  std::string buf;
  char chunk[1 << 16];
  size_t got;
  while ((got = std::fread(chunk, 1, sizeof chunk, fp)) > 0) buf.append(chunk, got);
  const bool read_failed = std::ferror(fp) != 0;
  std::fclose(fp);
  if (read_failed) return io_error("read failed");
  const size_t file_size = buf.size();
  if (file_size > 0) {
    f->map_ = std::malloc(file_size);
    if (!f->map_) return io_error("out of memory reading the file");
    std::memcpy(f->map_, buf.data(), file_size);
    f->map_size_ = file_size;
  }
#else
  // O_NONBLOCK: opening a FIFO must not wait for a writer; it is then refused as not a regular file.
  int fd;
  do fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK); while (fd < 0 && errno == EINTR);
  if (fd < 0) return io_error("cannot open: " + sys_error());
  struct stat st;
  if (fstat(fd, &st) != 0) { Status s = io_error("cannot stat: " + sys_error()); ::close(fd); return s; }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return io_error(std::string("not a regular file (") + (S_ISFIFO(st.st_mode) ? "a FIFO" : S_ISDIR(st.st_mode) ? "a directory" : "a device or socket") + ")");
  }
  const size_t file_size = static_cast<size_t>(st.st_size);
  if (file_size >= 8 && map_file) {
    // Opt-in (the file must not change while loaded: truncating it then is SIGBUS, rewriting it
    // changes the weights). Writable copy-on-write mapping: the file is never modified, and a
    // JavaScript view of the mapping that gets written to copies the page instead of faulting.
    void* m = mmap(nullptr, file_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) { Status s = io_error("mmap failed: " + sys_error()); ::close(fd); return s; }
    f->map_ = m;
    f->map_size_ = file_size;
    f->mapped_ = true;
  } else if (file_size >= 8) {
    // The default: the file is read into private memory, so nothing done to it later reaches us.
    f->map_ = std::malloc(file_size);
    if (!f->map_) { ::close(fd); return Status::Error(code::kOutOfMemory, path + ": out of memory reading " + std::to_string(file_size) + " bytes"); }
    f->map_size_ = file_size;
    size_t got = 0;
    while (got < file_size) {
      const ssize_t r = ::pread(fd, static_cast<uint8_t*>(f->map_) + got, std::min<size_t>(file_size - got, 1u << 30), (off_t)got);
      if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (r <= 0) {
        Status s = io_error(r < 0 ? "read failed: " + sys_error() : "the file shrank while it was read");
        ::close(fd);
        return s;
      }
      got += (size_t)r;
    }
  }
  ::close(fd);
#endif
  return validate(std::move(f), file_size, out);
}

Status SafetensorsFile::from_memory(const std::string& name, const void* data, size_t size, std::unique_ptr<SafetensorsFile>* out) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = name;
  if (size > 0) {
    f->map_ = std::malloc(size);
    if (!f->map_) return Status::Error(code::kOutOfMemory, name + ": out of memory");
    std::memcpy(f->map_, data, size);
    f->map_size_ = size;
  }
  return validate(std::move(f), size, out);
}

// The header checks of open() and from_memory(), over f->map_ (file_size bytes).
Status SafetensorsFile::validate(std::unique_ptr<SafetensorsFile> f, size_t file_size, std::unique_ptr<SafetensorsFile>* out) {
  const std::string& path = f->path_;
  auto bad = [&](const std::string& what) { return Status::Error(code::kSafetensors, path + ": " + what); };
  auto bad_tensor = [&](const std::string& name, const std::string& what) {
    return Status::Error(code::kSafetensors, path + ": tensor \"" + name + "\": " + what);
  };
  if (file_size < 8)
    return bad("file is " + std::to_string(file_size) + " bytes, shorter than the 8-byte header length");
  const uint8_t* base = static_cast<const uint8_t*>(f->map_);
  uint64_t n = 0;
  for (int k = 7; k >= 0; --k) n = (n << 8) | base[k];
  constexpr uint64_t kMaxHeader = 100u * 1000 * 1000;
  if (n > kMaxHeader)
    return bad("header length " + std::to_string(n) + " exceeds the 100 MB limit");
  if (n > file_size - 8)
    return bad("header length " + std::to_string(n) + " runs past the end of the file (" +
               std::to_string(file_size) + " bytes)");
  if (n == 0) return bad("header is empty");

  JValue root;
  JsonParser parser(reinterpret_cast<const char*>(base + 8), n);
  if (!parser.parse_document(&root)) return bad("invalid header JSON: " + parser.error());
  if (root.kind != JValue::kObject) return bad(std::string("header is ") + kind_name(root.kind) + ", expected an object");

  const uint8_t* data_begin = base + 8 + n;
  const uint64_t data_size = file_size - 8 - n;
  struct Range { uint64_t b, e; const std::string* name; };
  std::vector<Range> ranges;

  for (auto& kv : root.obj) {
    const std::string& name = kv.first;
    const JValue& v = kv.second;
    if (name == "__metadata__") {
      if (v.kind != JValue::kObject)
        return bad(std::string("__metadata__ is ") + kind_name(v.kind) + ", expected an object of strings");
      for (auto& m : v.obj) {
        if (m.second.kind != JValue::kString)
          return bad("__metadata__ \"" + m.first + "\" is " + kind_name(m.second.kind) + ", expected a string");
        f->metadata_[m.first] = m.second.s;
      }
      continue;
    }
    if (v.kind != JValue::kObject) return bad_tensor(name, std::string("entry is ") + kind_name(v.kind) + ", expected an object");
    const JValue* jdtype = nullptr;
    const JValue* jshape = nullptr;
    const JValue* joffsets = nullptr;
    for (auto& field : v.obj) {
      if (field.first == "dtype") jdtype = &field.second;
      else if (field.first == "shape") jshape = &field.second;
      else if (field.first == "data_offsets") joffsets = &field.second;
      else return bad_tensor(name, "unexpected key \"" + field.first + "\"");
    }
    if (!jdtype) return bad_tensor(name, "missing \"dtype\"");
    if (!jshape) return bad_tensor(name, "missing \"shape\"");
    if (!joffsets) return bad_tensor(name, "missing \"data_offsets\"");

    SafeTensor t;
    t.name = name;
    if (jdtype->kind != JValue::kString) return bad_tensor(name, std::string("dtype is ") + kind_name(jdtype->kind) + ", expected a string");
    if (!parse_dtype(jdtype->s, &t.dtype)) return bad_tensor(name, "unsupported dtype \"" + jdtype->s + "\"");

    if (jshape->kind != JValue::kArray) return bad_tensor(name, std::string("shape is ") + kind_name(jshape->kind) + ", expected an array");
    uint64_t numel = 1;
    bool numel_overflow = false;
    for (auto& d : jshape->arr) {
      if (d.kind != JValue::kInt || d.i < 0)
        return bad_tensor(name, "shape must be an array of non-negative integers");
      t.shape.push_back(d.i);
    }
    // Overflow-checked product (a zero dimension makes the tensor empty whatever the others are).
    if (std::find(t.shape.begin(), t.shape.end(), 0) != t.shape.end()) {
      numel = 0;
    } else {
      for (int64_t d : t.shape) {
        if (numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / static_cast<uint64_t>(d)) { numel_overflow = true; break; }
        numel *= static_cast<uint64_t>(d);
      }
    }
    const uint64_t esize = dtype_size(t.dtype);
    if (numel_overflow || numel > std::numeric_limits<uint64_t>::max() / esize)
      return bad_tensor(name, "shape " + shape_str(t.shape) + " has too many elements");
    const uint64_t nbytes = numel * esize;

    if (joffsets->kind != JValue::kArray || joffsets->arr.size() != 2 ||
        joffsets->arr[0].kind != JValue::kInt || joffsets->arr[1].kind != JValue::kInt ||
        joffsets->arr[0].i < 0 || joffsets->arr[1].i < 0)
      return bad_tensor(name, "data_offsets must be an array of two non-negative integers");
    const uint64_t b = static_cast<uint64_t>(joffsets->arr[0].i);
    const uint64_t e = static_cast<uint64_t>(joffsets->arr[1].i);
    const std::string offs = "data_offsets [" + std::to_string(b) + ", " + std::to_string(e) + "]";
    if (b > e) return bad_tensor(name, offs + " are reversed");
    if (e > data_size)
      return bad_tensor(name, offs + " run past the end of the data (" + std::to_string(data_size) + " bytes)");
    if (e - b != nbytes)
      return bad_tensor(name, offs + " do not match shape " + shape_str(t.shape) + " of " + dtype_name(t.dtype) +
                                  " (" + std::to_string(nbytes) + " bytes)");
    t.data = data_begin + b;
    t.nbytes = static_cast<size_t>(nbytes);
    auto ins = f->tensors_.emplace(name, std::move(t));
    if (nbytes > 0) ranges.push_back({b, e, &ins.first->first});
  }

  // Empty tensors occupy no bytes; every other pair must be disjoint.
  std::sort(ranges.begin(), ranges.end(), [](const Range& x, const Range& y) { return x.b < y.b || (x.b == y.b && x.e < y.e); });
  for (size_t k = 1; k < ranges.size(); ++k) {
    if (ranges[k].b < ranges[k - 1].e)
      return bad_tensor(*ranges[k].name, "data_offsets [" + std::to_string(ranges[k].b) + ", " + std::to_string(ranges[k].e) +
                                             "] overlap tensor \"" + *ranges[k - 1].name + "\" [" +
                                             std::to_string(ranges[k - 1].b) + ", " + std::to_string(ranges[k - 1].e) + "]");
  }
  // The data buffer is fully indexed (the safetensors rule): offsets contiguous from 0, no hole, no
  // trailing bytes. A wrong header length shifts every tensor; this is where it shows.
  uint64_t at = 0;
  for (const Range& r : ranges) {
    if (r.b != at)
      return bad_tensor(*r.name, "data_offsets [" + std::to_string(r.b) + ", " + std::to_string(r.e) + "] leave a hole of " +
                                     std::to_string(r.b - at) + " bytes before it (the data must be contiguous from offset 0)");
    at = r.e;
  }
  if (at != data_size)
    return bad(std::to_string(data_size - at) + " bytes after the last tensor's data (" + std::to_string(data_size) +
               " data bytes, " + std::to_string(at) + " indexed): the header length or the offsets are wrong");

  *out = std::move(f);
  return Status::OK();
}

Status SafetensorsFile::as_f32(const SafeTensor& t, const float** data, std::vector<float>* owned) const {
  owned->clear();
  const size_t n = static_cast<size_t>(t.numel());
  const uint8_t* p = t.data;
  switch (t.dtype) {
    case DType::F32:
      if (reinterpret_cast<uintptr_t>(p) % alignof(float) == 0) {
        *data = reinterpret_cast<const float*>(p);
        return Status::OK();
      }
      owned->resize(n);
      if (n) std::memcpy(owned->data(), p, n * sizeof(float));
      break;
    case DType::F16:
    case DType::BF16: {
      owned->resize(n);
      const bool half = t.dtype == DType::F16;
      for (size_t k = 0; k < n; ++k) {
        const uint16_t h = static_cast<uint16_t>(p[2 * k] | (p[2 * k + 1] << 8));
        (*owned)[k] = half ? f16_to_f32(h) : bf16_to_f32(h);
      }
      break;
    }
    case DType::F64:
      owned->resize(n);
      for (size_t k = 0; k < n; ++k) {
        double d;
        std::memcpy(&d, p + 8 * k, 8);
        (*owned)[k] = double_to_f32(d);
      }
      break;
    default:
      return Status::Error(code::kSafetensors, path_ + ": tensor \"" + t.name + "\": dtype " + dtype_name(t.dtype) +
                                                   " cannot be read as float32");
  }
  *data = owned->data();
  return Status::OK();
}

// ---------------------------------------------------------------------------------------------
// Writer

Status safetensors_write(const std::string& path, const std::vector<TensorToWrite>& tensors,
                         const std::map<std::string, std::string>& metadata) {
  std::set<std::string> names;
  for (auto& t : tensors) {
    if (t.name == "__metadata__" || !names.insert(t.name).second)
      return Status::Error(code::kInvalidArg, path + ": tensor name \"" + t.name + "\" is reserved or repeated");
    for (int64_t d : t.shape)
      if (d < 0) return Status::Error(code::kInvalidArg, path + ": tensor \"" + t.name + "\": negative dimension");
  }

  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (auto& kv : metadata) {
      if (!first) header += ",";
      first = false;
      append_json_string(&header, kv.first);
      header += ":";
      append_json_string(&header, kv.second);
    }
    header += "}";
  }
  uint64_t offset = 0;
  std::vector<size_t> sizes;
  for (size_t k = 0; k < tensors.size(); ++k) {
    const TensorToWrite& t = tensors[k];
    uint64_t numel = 1;
    for (int64_t d : t.shape) numel *= static_cast<uint64_t>(d);
    const uint64_t nbytes = numel * sizeof(float);
    sizes.push_back(static_cast<size_t>(nbytes));
    if (header.size() > 1) header += ",";
    append_json_string(&header, t.name);
    header += ":{\"dtype\":\"F32\",\"shape\":" + shape_str(t.shape) + ",\"data_offsets\":[" +
              std::to_string(offset) + "," + std::to_string(offset + nbytes) + "]}";
    offset += nbytes;
  }
  header += "}";
  while (header.size() % 8 != 0) header += ' ';

  uint8_t len_bytes[8];
  uint64_t n = header.size();
  for (int k = 0; k < 8; ++k) len_bytes[k] = static_cast<uint8_t>(n >> (8 * k));

#ifdef _WIN32
  static std::atomic<uint64_t> counter{0};  // a temporary file of this write alone
  const std::string tmp = path + ".tmp-" + std::to_string(_getpid()) + "-" + std::to_string(counter.fetch_add(1));
  std::FILE* fp = std::fopen(tmp.c_str(), "wb");
  if (!fp) return Status::Error(code::kIO, path + ": cannot create " + tmp + ": " + sys_error());
  bool okw = std::fwrite(len_bytes, 1, 8, fp) == 8 && std::fwrite(header.data(), 1, header.size(), fp) == header.size();
  for (size_t k = 0; okw && k < tensors.size(); ++k)
    if (sizes[k]) okw = std::fwrite(tensors[k].data, 1, sizes[k], fp) == sizes[k];
  okw = (std::fclose(fp) == 0) && okw;
  if (!okw) { std::remove(tmp.c_str()); return Status::Error(code::kIO, path + ": write failed"); }
  std::remove(path.c_str());  // rename does not replace an existing file on Windows
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    Status s = Status::Error(code::kIO, path + ": cannot rename " + tmp + ": " + sys_error());
    std::remove(tmp.c_str());
    return s;
  }
#else
  // A temporary file of this write alone (O_EXCL, a per-process counter): concurrent saves to one
  // path each write their own and the last rename wins; a failed save never reaches `path`.
  static std::atomic<uint64_t> counter{0};
  std::string tmp;
  int fd = -1;
  for (int attempt = 0; fd < 0 && attempt < 100; attempt++) {
    tmp = path + ".tmp-" + std::to_string(getpid()) + "-" + std::to_string(counter.fetch_add(1));
    do fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644); while (fd < 0 && errno == EINTR);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) return Status::Error(code::kIO, path + ": cannot create " + tmp + ": " + sys_error());
  auto write_all = [fd](const void* p, size_t len) {
    const char* c = static_cast<const char*>(p);
    while (len > 0) {
      ssize_t w = ::write(fd, c, len);
      if (w < 0) { if (errno == EINTR) continue; return false; }
      c += w;
      len -= static_cast<size_t>(w);
    }
    return true;
  };
  auto fail = [&](const std::string& what) {
    Status s = Status::Error(code::kIO, path + ": " + what + ": " + sys_error());
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    return s;
  };
  if (!write_all(len_bytes, 8) || !write_all(header.data(), header.size())) return fail("write failed");
  for (size_t k = 0; k < tensors.size(); ++k)
    if (sizes[k] && !write_all(tensors[k].data, sizes[k])) return fail("write failed");
  if (fsync(fd) != 0) return fail("fsync failed");
  const int rc = ::close(fd);
  fd = -1;
  if (rc != 0) return fail("close failed");
  if (::rename(tmp.c_str(), path.c_str()) != 0) return fail("cannot rename " + tmp);
  // The rename itself is durable once the directory is synced (best effort: not every file system allows it).
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  int dfd;
  do dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); while (dfd < 0 && errno == EINTR);
  if (dfd >= 0) { (void)fsync(dfd); ::close(dfd); }
#endif
  return Status::OK();
}

}  // namespace mend
