#include "exec/npy.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstring>
#include <utility>

#include "bnorm/error.hpp"

namespace bnorm::exec {
namespace fs = std::filesystem;

namespace {

constexpr std::size_t kMagicSize = 6;
constexpr unsigned char kMagic[kMagicSize] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

[[noreturn]] void refuse(const std::string& where, const std::string& why) {
  throw Error(ErrorKind::invalid_argument, where + ": " + why);
}

std::string errno_text(int err) { return std::strerror(err); }

// Little-endian integers at any (possibly unaligned) address.
std::uint64_t load_le(const std::byte* p, int bytes) {
  std::uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | std::to_integer<std::uint64_t>(p[i]);
  return v;
}
std::uint16_t le16(const std::byte* p) { return static_cast<std::uint16_t>(load_le(p, 2)); }
std::uint32_t le32(const std::byte* p) { return static_cast<std::uint32_t>(load_le(p, 4)); }
std::uint64_t le64(const std::byte* p) { return load_le(p, 8); }

// Products of sizes, refused instead of wrapped when they leave int64.
bool checked_mul(std::int64_t a, std::int64_t b, std::int64_t* out) {
  return !__builtin_mul_overflow(a, b, out);
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + (shape.size() == 1 ? ",)" : ")");
}

// A read-only private mapping of a whole file; the bytes live as long as the
// last NpyArray or NpzArchive that shares it.
class Mapping {
 public:
  Mapping(void* addr, std::size_t size) : addr_(addr), size_(size) {}
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (addr_) ::munmap(addr_, size_);
  }
  const std::byte* bytes() const { return static_cast<const std::byte*>(addr_); }
  std::size_t size() const { return size_; }

 private:
  void* addr_;
  std::size_t size_;
};

std::shared_ptr<Mapping> map_file(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    throw Error(ErrorKind::io, "cannot open " + path.string() + ": " + errno_text(err));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw Error(ErrorKind::io, "cannot read " + path.string() + ": " + errno_text(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(ErrorKind::io, "cannot read " + path.string() + ": it is not a regular file");
  }
  const auto size = static_cast<std::size_t>(st.st_size);
  void* addr = nullptr;
  // mmap of length 0 fails; an empty file is refused later by its content.
  if (size > 0) {
    addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      throw Error(ErrorKind::io, "cannot map " + path.string() + " into memory: " + errno_text(err));
    }
  }
  ::close(fd);  // the mapping keeps the file referenced
  return std::make_shared<Mapping>(addr, size);
}

// ---------------------------------------------------------------------------
// The .npy header is the repr() of a Python dict, e.g.
//   {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
// padded with spaces and a newline. This parses the Python literals that can
// appear in it (strings, ints, True/False/None, tuples, lists, dicts) so that
// key order, spacing, trailing commas and structured descrs (lists) are all
// handled as numpy's own ast.literal_eval-based reader handles them.

struct PyValue {
  enum class Kind { string, integer, boolean, none, tuple, list, dict } kind = Kind::none;
  std::string text;            // string
  std::int64_t integer = 0;    // integer
  bool boolean = false;        // boolean
  std::vector<PyValue> items;  // tuple, list; dict: key, value, key, value, ...
};

class HeaderParser {
 public:
  HeaderParser(std::string_view text, const std::string& where) : s_(text), where_(where) {}

  PyValue parse_document() {
    PyValue v = value(0);
    skip_space();
    if (pos_ != s_.size()) fail("unexpected text after the dict");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    refuse(where_, "the header is not a valid .npy header dict (" + why + " at offset " +
                       std::to_string(pos_) + "); the file is damaged or was not written by numpy");
  }

  void skip_space() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r' ||
                                s_[pos_] == '\f' || s_[pos_] == '\v'))
      ++pos_;
  }

  bool accept(char c) {
    skip_space();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  bool accept_word(std::string_view w) {
    if (s_.substr(pos_, w.size()) != w) return false;
    const std::size_t end = pos_ + w.size();
    if (end < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[end])) || s_[end] == '_'))
      return false;
    pos_ = end;
    return true;
  }

  // Headers are tiny; the limit only keeps a hostile "[[[[..." off the stack.
  static constexpr int kMaxDepth = 32;

  PyValue value(int depth) {
    if (depth > kMaxDepth) fail("nesting deeper than " + std::to_string(kMaxDepth));
    skip_space();
    if (pos_ >= s_.size()) fail("it ends early");
    const char c = s_[pos_];
    PyValue v;
    if (c == '\'' || c == '"') {
      v.kind = PyValue::Kind::string;
      v.text = string_literal();
    } else if (c == '-' || c == '+' || (c >= '0' && c <= '9')) {
      v.kind = PyValue::Kind::integer;
      v.integer = integer_literal();
    } else if (accept_word("True")) {
      v.kind = PyValue::Kind::boolean;
      v.boolean = true;
    } else if (accept_word("False")) {
      v.kind = PyValue::Kind::boolean;
    } else if (accept_word("None")) {
      v.kind = PyValue::Kind::none;
    } else if (c == '(') {
      ++pos_;
      // "(x)" is x itself in Python; only "()" and a comma make a tuple.
      bool comma = false;
      v.items = sequence(')', depth, &comma);
      if (v.items.size() == 1 && !comma) return std::move(v.items[0]);
      v.kind = PyValue::Kind::tuple;
    } else if (c == '[') {
      ++pos_;
      bool comma = false;
      v.items = sequence(']', depth, &comma);
      v.kind = PyValue::Kind::list;
    } else if (c == '{') {
      ++pos_;
      v.kind = PyValue::Kind::dict;
      while (!accept('}')) {
        v.items.push_back(value(depth + 1));
        if (!accept(':')) fail("expected ':' after a dict key");
        v.items.push_back(value(depth + 1));
        if (accept('}')) break;
        if (!accept(',')) fail("expected ',' or '}' in the dict");
      }
    } else {
      fail(std::string("unexpected character '") + c + "'");
    }
    return v;
  }

  std::vector<PyValue> sequence(char close, int depth, bool* comma) {
    std::vector<PyValue> items;
    while (!accept(close)) {
      items.push_back(value(depth + 1));
      if (accept(close)) break;
      if (!accept(',')) fail(std::string("expected ',' or '") + close + "'");
      *comma = true;
    }
    return items;
  }

  std::string string_literal() {
    const char quote = s_[pos_++];
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) fail("a string is not terminated");
      const char c = s_[pos_++];
      if (c == quote) return out;
      if (c == '\n') fail("a string is not terminated");
      if (c == '\\') {
        if (pos_ >= s_.size()) fail("a string is not terminated");
        const char e = s_[pos_++];
        out += e == 'n' ? '\n' : e == 't' ? '\t' : e;
      } else {
        out += c;
      }
    }
  }

  std::int64_t integer_literal() {
    bool negative = false;
    if (s_[pos_] == '-' || s_[pos_] == '+') negative = s_[pos_++] == '-';
    skip_space();
    const std::size_t start = pos_;
    std::int64_t v = 0;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
      const int digit = s_[pos_] - '0';
      if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, digit, &v))
        refuse(where_, "the header holds the integer " + std::string(s_.substr(start, 40)) +
                           "..., which does not fit in 64 bits");
      ++pos_;
    }
    if (pos_ == start) fail("expected digits");
    // Python 2 wrote long integers as 3L; numpy still reads those headers.
    if (pos_ < s_.size() && (s_[pos_] == 'L' || s_[pos_] == 'l')) ++pos_;
    return negative ? -v : v;
  }

  std::string_view s_;
  const std::string& where_;
  std::size_t pos_ = 0;
};

struct DescrInfo {
  std::string_view code;  // without byte order, e.g. "f4"
  NpyType type;
};
constexpr DescrInfo kDescrs[] = {
    {"f4", NpyType::f32}, {"f8", NpyType::f64}, {"f2", NpyType::f16}, {"i8", NpyType::i64},
    {"i4", NpyType::i32}, {"u1", NpyType::u8},  {"i1", NpyType::i8},  {"b1", NpyType::boolean},
};

std::string supported_list() {
  std::string s;
  for (const auto& d : kDescrs) {
    if (!s.empty()) s += ", ";
    s += std::string(to_string(d.type)) + " '" + std::string(npy_descr(d.type)) + "'";
  }
  return s;
}

NpyType parse_descr(const PyValue& v, const std::string& where) {
  if (v.kind == PyValue::Kind::list)
    refuse(where,
           "the dtype is structured (a record with named fields); bnorm reads plain numeric arrays: "
           "save each field as an array of its own");
  if (v.kind != PyValue::Kind::string)
    refuse(where,
           "the header's 'descr' is not a dtype string (a sub-array or structured dtype); bnorm reads "
           "plain numeric arrays of " +
               supported_list());
  const std::string& d = v.text;
  char order = 0;
  std::string_view code = d;
  if (!d.empty() && (d[0] == '<' || d[0] == '>' || d[0] == '|' || d[0] == '=')) {
    order = d[0];
    code.remove_prefix(1);
  }
  for (const auto& known : kDescrs) {
    if (code != known.code) continue;
    // Byte order means nothing for one-byte types: numpy writes '|', but any
    // marker denotes the same bytes.
    if (size_of(known.type) == 1 || order == '<') return known.type;
    if (order == '>')
      refuse(where, "dtype '" + d + "' is big-endian; save it little-endian (arr.astype('<" +
                        std::string(code) + "'))");
    refuse(where, "dtype '" + d + "' does not say little-endian; expected '<" + std::string(code) + "'");
  }
  if (code == "O")
    refuse(where, "dtype '" + d +
                      "' is object (pickled Python objects), which bnorm never reads; save a numeric "
                      "array (e.g. arr.astype(np.float32))");
  if (!code.empty() && (code[0] == 'U' || code[0] == 'S' || code[0] == 'a'))
    refuse(where, "dtype '" + d + "' is a string dtype; bnorm reads numeric arrays of " + supported_list());
  if (order == '>')
    refuse(where, "dtype '" + d + "' is big-endian and not supported; save it as one of " + supported_list() +
                      " (arr.astype(...))");
  refuse(where,
         "dtype '" + d + "' is not supported; save it as one of " + supported_list() + " (arr.astype(...))");
}

}  // namespace

std::size_t size_of(NpyType type) {
  switch (type) {
    case NpyType::f64:
    case NpyType::i64:
      return 8;
    case NpyType::f32:
    case NpyType::i32:
      return 4;
    case NpyType::f16:
      return 2;
    case NpyType::u8:
    case NpyType::i8:
    case NpyType::boolean:
      return 1;
  }
  return 0;
}

std::string_view to_string(NpyType type) {
  switch (type) {
    case NpyType::f32:
      return "float32";
    case NpyType::f64:
      return "float64";
    case NpyType::f16:
      return "float16";
    case NpyType::i64:
      return "int64";
    case NpyType::i32:
      return "int32";
    case NpyType::u8:
      return "uint8";
    case NpyType::i8:
      return "int8";
    case NpyType::boolean:
      return "bool";
  }
  return "unknown";
}

std::string_view npy_descr(NpyType type) {
  switch (type) {
    case NpyType::f32:
      return "<f4";
    case NpyType::f64:
      return "<f8";
    case NpyType::f16:
      return "<f2";
    case NpyType::i64:
      return "<i8";
    case NpyType::i32:
      return "<i4";
    case NpyType::u8:
      return "|u1";
    case NpyType::i8:
      return "|i1";
    case NpyType::boolean:
      return "|b1";
  }
  return "";
}

// ---------------------------------------------------------------------------
// NpyArray

NpyArray NpyArray::parse(std::shared_ptr<const void> owner, const std::byte* bytes, std::size_t size,
                         std::string source) {
  const std::string& where = source;
  // Layout: magic (6), major, minor, header length (u16 for 1.0, u32 for
  // 2.0 and 3.0), header text, data.
  if (size == 0 || std::memcmp(bytes, kMagic, std::min(size, kMagicSize)) != 0)
    refuse(where, "not a .npy file (it does not start with the magic bytes \\x93NUMPY)");
  if (size < 10)
    refuse(where, "the file is truncated (" + std::to_string(size) + " bytes, shorter than a .npy preamble)");
  const int major = std::to_integer<int>(bytes[6]);
  const int minor = std::to_integer<int>(bytes[7]);
  if (major < 1 || major > 3 || minor != 0)
    refuse(where, "format version " + std::to_string(major) + "." + std::to_string(minor) +
                      " is not supported; bnorm reads .npy versions 1.0, 2.0 and 3.0");
  const std::size_t preamble = major == 1 ? 10 : 12;
  if (size < preamble)
    refuse(where, "the file is truncated (" + std::to_string(size) + " bytes, shorter than a version " +
                      std::to_string(major) + ".0 preamble)");
  const std::uint64_t header_len = major == 1 ? le16(bytes + 8) : le32(bytes + 8);
  if (header_len > size - preamble)
    refuse(where, "the file is truncated: the header says it is " + std::to_string(header_len) +
                      " bytes long, but only " + std::to_string(size - preamble) + " follow the preamble");
  const std::size_t data_offset = preamble + header_len;

  const std::string_view text(reinterpret_cast<const char*>(bytes + preamble), header_len);
  const PyValue dict = HeaderParser(text, where).parse_document();
  if (dict.kind != PyValue::Kind::dict) refuse(where, "the header is not a dict; the file is damaged");
  const PyValue* descr = nullptr;
  const PyValue* fortran = nullptr;
  const PyValue* shape = nullptr;
  for (std::size_t i = 0; i < dict.items.size(); i += 2) {
    const PyValue& key = dict.items[i];
    const PyValue** target = nullptr;
    if (key.kind == PyValue::Kind::string) {
      if (key.text == "descr") target = &descr;
      if (key.text == "fortran_order") target = &fortran;
      if (key.text == "shape") target = &shape;
    }
    if (!target)
      refuse(where, "the header has an unexpected key" +
                        (key.kind == PyValue::Kind::string ? " '" + key.text + "'" : std::string()) +
                        "; a .npy header holds exactly 'descr', 'fortran_order' and 'shape'");
    if (*target) refuse(where, "the header names '" + key.text + "' twice");
    *target = &dict.items[i + 1];
  }
  const auto require = [&](const PyValue* v, const char* name) {
    if (!v)
      refuse(where, std::string("the header lacks '") + name +
                        "'; a .npy header holds 'descr', 'fortran_order' and 'shape'");
  };
  require(descr, "descr");
  require(fortran, "fortran_order");
  require(shape, "shape");

  NpyArray a;
  a.type_ = parse_descr(*descr, where);
  if (shape->kind != PyValue::Kind::tuple) refuse(where, "the header's 'shape' is not a tuple of integers");
  for (const auto& d : shape->items) {
    if (d.kind != PyValue::Kind::integer) refuse(where, "the header's 'shape' is not a tuple of integers");
    a.shape_.push_back(d.integer);
  }
  for (std::int64_t d : a.shape_)
    if (d < 0) refuse(where, "shape " + shape_text(a.shape_) + " has a negative dimension");
  if (fortran->kind != PyValue::Kind::boolean)
    refuse(where, "the header's 'fortran_order' is not True or False");
  if (fortran->boolean) {
    // Fortran and C order are the same bytes when at most one dimension
    // exceeds 1 (vectors, scalars, empty arrays); those are read as they are.
    const auto long_dims =
        std::count_if(a.shape_.begin(), a.shape_.end(), [](std::int64_t d) { return d > 1; });
    const bool empty = std::find(a.shape_.begin(), a.shape_.end(), 0) != a.shape_.end();
    if (long_dims > 1 && !empty)
      refuse(where, "the array " + shape_text(a.shape_) +
                        " is in Fortran order; save it with np.ascontiguousarray(arr) (C order)");
  }

  // Element count and bytes, every product checked: a hostile shape must
  // not wrap around to a small size that then passes the size check.
  const auto item = static_cast<std::int64_t>(size_of(a.type_));
  std::int64_t row_elems = 1;
  bool ok = true;
  for (std::size_t i = 1; i < a.shape_.size(); ++i)
    ok = ok && checked_mul(row_elems, a.shape_[i], &row_elems);
  std::int64_t row_bytes = 0;
  ok = ok && checked_mul(row_elems, item, &row_bytes);
  a.rows_ = a.shape_.empty() ? 1 : a.shape_[0];
  std::int64_t total = 0;
  ok = ok && checked_mul(a.rows_, row_bytes, &total) && checked_mul(a.rows_, row_elems, &a.element_count_);
  if (!ok)
    refuse(where, "shape " + shape_text(a.shape_) + " of " + std::string(to_string(a.type_)) +
                      " overflows 64-bit sizes; the header is damaged");
  a.row_bytes_ = static_cast<std::size_t>(row_bytes);
  a.size_bytes_ = static_cast<std::size_t>(total);

  const std::size_t have = size - data_offset;
  if (have < a.size_bytes_)
    refuse(where, "the file is truncated: shape " + shape_text(a.shape_) + " of " +
                      std::string(to_string(a.type_)) + " needs " + std::to_string(a.size_bytes_) +
                      " bytes of data, but only " + std::to_string(have) + " follow the header");
  if (have > a.size_bytes_)
    refuse(where, std::to_string(have - a.size_bytes_) + " bytes follow the data of shape " +
                      shape_text(a.shape_) + " of " + std::string(to_string(a.type_)) + " (" +
                      std::to_string(a.size_bytes_) +
                      " bytes); the header does not describe the file (damaged, or not written by numpy)");
  a.owner_ = std::move(owner);
  a.data_ = bytes + data_offset;
  a.source_ = std::move(source);
  return a;
}

NpyArray NpyArray::open(const fs::path& path) {
  auto mapping = map_file(path);
  const std::byte* bytes = mapping->bytes();
  const std::size_t size = mapping->size();
  return parse(std::move(mapping), bytes, size, path.string());
}

const std::byte* NpyArray::row(std::int64_t i) const {
  if (i < 0 || i >= rows_)
    throw Error(ErrorKind::invalid_argument, source_ + ": row " + std::to_string(i) +
                                                 " is out of range; the array has " + std::to_string(rows_) +
                                                 " rows");
  return data_ + static_cast<std::size_t>(i) * row_bytes_;
}

void NpyArray::copy_rows(std::int64_t first, std::int64_t count, void* dst) const {
  if (first < 0 || count < 0 || first > rows_ || count > rows_ - first)
    throw Error(ErrorKind::invalid_argument, source_ + ": rows [" + std::to_string(first) + ", " +
                                                 std::to_string(first) + " + " + std::to_string(count) +
                                                 ") are out of range; the array has " +
                                                 std::to_string(rows_) + " rows");
  if (count == 0) return;
  if (!dst) throw Error(ErrorKind::invalid_argument, source_ + ": copy_rows got a null destination");
  std::memcpy(dst, data_ + static_cast<std::size_t>(first) * row_bytes_,
              static_cast<std::size_t>(count) * row_bytes_);
}

// ---------------------------------------------------------------------------
// NpzArchive
//
// A zip ends with an "end of central directory" record (EOCD) that locates
// the central directory, which lists every member with its sizes, CRC and
// the offset of its local header; the member's bytes follow that local
// header. Classic zip fields are 32-bit; zip64 moves values that do not fit
// (or, as numpy does with force_zip64=True, any value it likes) into "zip64
// extra fields" and an optional zip64 EOCD. numpy forces zip64 so that a
// member can grow past 4 GiB while it is being written without knowing its
// size up front (numpy gh-10776); its local headers therefore always carry a
// zip64 extra field, and large archives use the zip64 forms everywhere.

namespace {

constexpr std::uint32_t kLocalHeaderSig = 0x04034b50;
constexpr std::uint32_t kCentralHeaderSig = 0x02014b50;
constexpr std::uint32_t kEocdSig = 0x06054b50;
constexpr std::uint32_t kZip64EocdSig = 0x06064b50;
constexpr std::uint32_t kZip64LocatorSig = 0x07064b50;
constexpr std::size_t kEocdSize = 22;
constexpr std::size_t kZip64EocdSize = 56;
constexpr std::size_t kZip64LocatorSize = 20;
constexpr std::size_t kCentralHeaderSize = 46;
constexpr std::size_t kLocalHeaderSize = 30;
constexpr std::uint32_t kFull32 = 0xFFFFFFFF;
constexpr std::uint16_t kFull16 = 0xFFFF;
// Deflate cannot expand data by more than about 1032:1; a member claiming
// more is damaged (or a zip bomb), and is refused before allocating for it.
constexpr std::uint64_t kMaxDeflateRatio = 1032;

std::string method_name(std::uint16_t m) {
  switch (m) {
    case 9:
      return "deflate64";
    case 12:
      return "bzip2";
    case 14:
      return "lzma";
    case 93:
      return "zstd";
    case 95:
      return "xz";
    default:
      return "method " + std::to_string(m);
  }
}

// Finds the zip64 extra field (id 1) in an extra block; nullptr if absent.
// Sets *len to its data length. A malformed block is refused.
const std::byte* find_zip64_extra(const std::byte* extra, std::size_t size, std::size_t* len,
                                  const std::string& where) {
  std::size_t p = 0;
  while (p + 4 <= size) {
    const std::uint16_t id = le16(extra + p);
    const std::uint16_t n = le16(extra + p + 2);
    if (n > size - p - 4) refuse(where, "an extra field runs past its header (the archive is damaged)");
    if (id == 1) {
      *len = n;
      return extra + p + 4;
    }
    p += 4 + n;
  }
  return nullptr;
}

// Replaces each 32-bit field that holds the 0xFFFFFFFF marker by the next
// 64-bit value of the zip64 extra field, in the order the zip spec fixes.
void resolve_zip64(const std::byte* extra, std::size_t extra_size,
                   std::initializer_list<std::uint64_t*> fields, const std::string& where) {
  std::size_t needed = 0;
  for (auto* f : fields) needed += *f == kFull32 ? 8 : 0;
  if (needed == 0) return;
  std::size_t len = 0;
  const std::byte* z = find_zip64_extra(extra, extra_size, &len, where);
  if (!z || len < needed)
    refuse(where,
           "a size or offset is marked as zip64 (0xFFFFFFFF) but the zip64 extra field is missing or short "
           "(the archive is damaged)");
  std::size_t p = 0;
  for (auto* f : fields)
    if (*f == kFull32) {
      *f = le64(z + p);
      p += 8;
    }
}

}  // namespace

NpzArchive NpzArchive::open(const fs::path& path) {
  auto mapping = map_file(path);
  const std::byte* b = mapping->bytes();
  const std::uint64_t size = mapping->size();
  const std::string where = path.string();
  const std::string not_zip = "not a .npz archive: ";

  // The EOCD is the last record; only a comment (at most 64 KiB) may follow
  // it, and its length field must reach exactly to the end of the file.
  if (size < kEocdSize)
    refuse(where, not_zip + "it is too short to be a zip file (truncated, or another format)");
  std::uint64_t eocd = 0;
  bool found = false;
  const std::uint64_t lowest = size - kEocdSize > 0xFFFF ? size - kEocdSize - 0xFFFF : 0;
  for (std::uint64_t p = size - kEocdSize + 1; p-- > lowest;) {
    if (le32(b + p) == kEocdSig && p + kEocdSize + le16(b + p + 20) == size) {
      eocd = p;
      found = true;
      break;
    }
  }
  if (!found)
    refuse(where, not_zip + "no zip end-of-central-directory record (truncated, or another format)");
  std::uint64_t disk = le16(b + eocd + 4), cd_disk = le16(b + eocd + 6), entries_here = le16(b + eocd + 8);
  std::uint64_t entries = le16(b + eocd + 10), cd_size = le32(b + eocd + 12), cd_offset = le32(b + eocd + 16);
  std::uint64_t cd_limit = eocd;  // the central directory ends before this

  // A zip64 locator right before the EOCD points at the zip64 EOCD, whose
  // 64-bit counts and offsets replace the saturated classic ones.
  if (eocd >= kZip64LocatorSize && le32(b + eocd - kZip64LocatorSize) == kZip64LocatorSig) {
    const std::uint64_t locator = eocd - kZip64LocatorSize;
    const std::uint64_t record = le64(b + locator + 8);
    if (locator < kZip64EocdSize || record > locator - kZip64EocdSize || le32(b + record) != kZip64EocdSig)
      refuse(where,
             "the zip64 locator does not point at a zip64 end-of-central-directory record (the archive is "
             "damaged or truncated)");
    disk = le32(b + record + 16);
    cd_disk = le32(b + record + 20);
    entries_here = le64(b + record + 24);
    entries = le64(b + record + 32);
    cd_size = le64(b + record + 40);
    cd_offset = le64(b + record + 48);
    cd_limit = record;
  }
  if (disk != 0 || cd_disk != 0 || entries_here != entries)
    refuse(where, "the zip spans several disks; split archives are not supported");
  if (cd_offset > cd_limit || cd_size != cd_limit - cd_offset)
    refuse(where, "the central directory (offset " + std::to_string(cd_offset) + ", " +
                      std::to_string(cd_size) + " bytes) does not end where the end record begins (offset " +
                      std::to_string(cd_limit) + "); the archive is truncated or damaged");
  if (entries > cd_size / kCentralHeaderSize)
    refuse(where, "the archive claims " + std::to_string(entries) +
                      " members, more than its central directory of " + std::to_string(cd_size) +
                      " bytes can hold (damaged)");

  NpzArchive z;
  z.path_ = where;
  std::uint64_t p = cd_offset;
  const std::uint64_t cd_end = cd_offset + cd_size;
  for (std::uint64_t i = 0; i < entries; ++i) {
    const std::string entry = "central directory entry #" + std::to_string(i);
    if (cd_end - p < kCentralHeaderSize || le32(b + p) != kCentralHeaderSig)
      refuse(where, entry + " is damaged (no central header signature)");
    const std::uint16_t flags = le16(b + p + 8);
    const std::uint16_t method = le16(b + p + 10);
    const std::uint32_t crc = le32(b + p + 16);
    std::uint64_t compressed = le32(b + p + 20), uncompressed = le32(b + p + 24);
    const std::uint16_t name_len = le16(b + p + 28), extra_len = le16(b + p + 30),
                        comment_len = le16(b + p + 32);
    const std::uint16_t start_disk = le16(b + p + 34);
    std::uint64_t local = le32(b + p + 42);
    if (cd_end - p - kCentralHeaderSize < std::uint64_t{name_len} + extra_len + comment_len)
      refuse(where, entry + " runs past the central directory (damaged)");
    const std::string name(reinterpret_cast<const char*>(b + p + kCentralHeaderSize), name_len);
    const std::string member = "member '" + name + "'";
    const std::byte* extra = b + p + kCentralHeaderSize + name_len;
    resolve_zip64(extra, extra_len, {&uncompressed, &compressed, &local}, where + " " + member);
    if (start_disk != 0 && start_disk != kFull16)
      refuse(where, "the zip spans several disks; split archives are not supported");
    p += kCentralHeaderSize + name_len + extra_len + comment_len;

    if (name.size() <= 4 || name.compare(name.size() - 4, 4, ".npy") != 0)
      refuse(where, member + " is not a .npy array; a .npz holds only '<name>.npy' members");
    if (flags & 0x41) refuse(where, member + " is encrypted; save the arrays with np.savez");
    if (method != 0 && method != 8)
      refuse(where, member + " is compressed with " + method_name(method) +
                        "; bnorm reads stored or deflated members (np.savez, np.savez_compressed)");
    if (method == 0 && compressed != uncompressed)
      refuse(where, member + " is stored (not compressed) but its compressed size " +
                        std::to_string(compressed) + " differs from its size " +
                        std::to_string(uncompressed) + " (damaged)");
    if (method == 8 && uncompressed / kMaxDeflateRatio > compressed + 1)
      refuse(where, member + " claims to inflate from " + std::to_string(compressed) + " to " +
                        std::to_string(uncompressed) + " bytes, beyond what deflate can produce (damaged)");

    // The local header repeats the name and has an extra field of its own
    // (with numpy, a zip64 one) whose lengths may differ from the central
    // directory's: the data starts after both.
    if (local > cd_offset || cd_offset - local < kLocalHeaderSize || le32(b + local) != kLocalHeaderSig)
      refuse(where,
             member + ": no local header at offset " + std::to_string(local) + " (truncated or damaged)");
    const std::uint16_t local_flags = le16(b + local + 6);
    const std::uint16_t local_name_len = le16(b + local + 26), local_extra_len = le16(b + local + 28);
    const std::uint64_t data = local + kLocalHeaderSize + local_name_len + local_extra_len;
    if (data > cd_offset || compressed > cd_offset - data)
      refuse(where, member + ": its " + std::to_string(compressed) + " bytes at offset " +
                        std::to_string(data) + " run into the central directory (truncated or damaged)");
    if (std::string_view(reinterpret_cast<const char*>(b + local + kLocalHeaderSize), local_name_len) != name)
      refuse(where, member + ": the local header names another file (damaged)");
    // Without a data descriptor (flag bit 3) the local header's CRC and sizes
    // are final and must agree with the central directory.
    if (!(local_flags & 0x08)) {
      std::uint64_t local_compressed = le32(b + local + 18), local_uncompressed = le32(b + local + 22);
      const std::byte* local_extra = b + local + kLocalHeaderSize + local_name_len;
      resolve_zip64(local_extra, local_extra_len, {&local_uncompressed, &local_compressed},
                    where + " " + member);
      if (le32(b + local + 14) != crc || local_compressed != compressed || local_uncompressed != uncompressed)
        refuse(where,
               member + ": the local header's CRC or sizes disagree with the central directory (damaged)");
    }

    const std::string short_name = name.substr(0, name.size() - 4);
    for (const auto& m : z.members_)
      if (m.name == short_name) refuse(where, "the archive holds two members named '" + name + "'");
    z.members_.push_back(Member{short_name, method, crc, compressed, uncompressed, data});
  }
  if (p != cd_end)
    refuse(where, "the central directory has " + std::to_string(cd_end - p) + " bytes after its " +
                      std::to_string(entries) + " entries (damaged)");
  z.bytes_ = b;
  z.mapping_ = std::move(mapping);
  return z;
}

std::vector<std::string> NpzArchive::names() const {
  std::vector<std::string> out;
  for (const auto& m : members_) out.push_back(m.name);
  return out;
}

bool NpzArchive::contains(const std::string& name) const {
  const std::string key = name.size() > 4 && name.ends_with(".npy") ? name.substr(0, name.size() - 4) : name;
  return std::any_of(members_.begin(), members_.end(), [&](const Member& m) { return m.name == key; });
}

NpyArray NpzArchive::array(const std::string& name) const {
  const std::string key = name.size() > 4 && name.ends_with(".npy") ? name.substr(0, name.size() - 4) : name;
  const auto it =
      std::find_if(members_.begin(), members_.end(), [&](const Member& m) { return m.name == key; });
  if (it == members_.end()) {
    std::string present;
    for (const auto& m : members_) present += (present.empty() ? "'" : ", '") + m.name + "'";
    throw Error(ErrorKind::invalid_argument,
                path_ + ": has no array '" + key + "'; " +
                    (present.empty() ? std::string("the archive is empty") : "it holds " + present));
  }
  const Member& m = *it;
  const std::string source = path_ + " member '" + m.name + ".npy'";
  const std::byte* in = bytes_ + m.data_offset;
  if (m.method == 0) {
    // Stored: read in place, after the check numpy makes too (one pass over
    // the member; a flipped byte would otherwise be data).
    if (crc32_z(0, reinterpret_cast<const Bytef*>(in), m.uncompressed_size) != m.crc32)
      refuse(source, "the CRC-32 of the stored data does not match the zip directory (damaged)");
    return NpyArray::parse(mapping_, in, m.uncompressed_size, source);
  }

  // Deflated: inflate the whole member. new[] (not a vector) so the buffer is
  // not zero-filled first; numpy's 64-byte header padding keeps the data at
  // the allocator's 16-byte alignment.
  std::shared_ptr<std::byte[]> buffer(new std::byte[std::max<std::uint64_t>(m.uncompressed_size, 1)]);
  z_stream zs{};
  if (inflateInit2(&zs, -MAX_WBITS) != Z_OK)  // raw deflate: zip has no zlib wrapper
    throw Error(ErrorKind::runtime, source + ": cannot initialize zlib");
  struct End {
    z_stream* s;
    ~End() { inflateEnd(s); }
  } end{&zs};
  std::uint64_t in_left = m.compressed_size, out_left = m.uncompressed_size;
  const std::byte* next_in = in;
  std::byte* next_out = buffer.get();
  while (true) {
    // zlib counts in 32-bit uInt, so members over 4 GiB are fed in pieces.
    if (zs.avail_in == 0 && in_left > 0) {
      const auto n = static_cast<uInt>(std::min<std::uint64_t>(in_left, UINT_MAX));
      zs.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(next_in));
      zs.avail_in = n;
      next_in += n;
      in_left -= n;
    }
    if (zs.avail_out == 0 && out_left > 0) {
      const auto n = static_cast<uInt>(std::min<std::uint64_t>(out_left, UINT_MAX));
      zs.next_out = reinterpret_cast<Bytef*>(next_out);
      zs.avail_out = n;
      next_out += n;
      out_left -= n;
    }
    const int ret = inflate(&zs, Z_NO_FLUSH);
    if (ret == Z_STREAM_END) break;
    if (ret == Z_OK) continue;
    if (ret == Z_BUF_ERROR && zs.avail_out == 0 && out_left == 0)
      refuse(source, "the member inflates to more than the " + std::to_string(m.uncompressed_size) +
                         " bytes the zip directory gives (damaged)");
    if (ret == Z_BUF_ERROR && zs.avail_in == 0 && in_left == 0)
      refuse(source, "the compressed data ends early (truncated or damaged)");
    refuse(source, std::string("the compressed data is corrupt (zlib: ") + (zs.msg ? zs.msg : "error") + ")");
  }
  const std::uint64_t produced = m.uncompressed_size - out_left - zs.avail_out;
  if (produced != m.uncompressed_size)
    refuse(source, "the member inflates to " + std::to_string(produced) +
                       " bytes, but the zip directory gives " + std::to_string(m.uncompressed_size) +
                       " (damaged)");
  const auto crc = crc32_z(0, reinterpret_cast<const Bytef*>(buffer.get()), m.uncompressed_size);
  if (crc != m.crc32)
    refuse(source, "the CRC-32 of the inflated data does not match the zip directory (damaged)");
  const std::byte* start = buffer.get();
  return NpyArray::parse(std::shared_ptr<const void>(std::move(buffer)), start, m.uncompressed_size, source);
}

// ---------------------------------------------------------------------------
// NpyWriter

namespace {

// The preamble and header dict of a C-order little-endian array. numpy pads
// the header with spaces so that the data starts at a multiple of 64 bytes:
// a reader that maps the file then finds every element naturally aligned,
// and 64 covers a cache line and any SIMD register.
std::string npy_header(NpyType type, const std::vector<std::int64_t>& shape) {
  const std::string dict = "{'descr': '" + std::string(npy_descr(type)) +
                           "', 'fortran_order': False, 'shape': " + shape_text(shape) + ", }";
  for (int major : {1, 2}) {
    const std::size_t preamble = major == 1 ? 10 : 12;
    const std::size_t unpadded = preamble + dict.size() + 1;  // + '\n'
    const std::size_t total = (unpadded + 63) / 64 * 64;
    const std::size_t header_len = total - preamble;
    // Version 1.0 has a 16-bit header length; only absurd ranks exceed it.
    if (major == 1 && header_len > 0xFFFF) continue;
    std::string out(reinterpret_cast<const char*>(kMagic), kMagicSize);
    out += static_cast<char>(major);
    out += '\0';
    for (std::size_t i = 0; i < preamble - 8; ++i) out += static_cast<char>((header_len >> (8 * i)) & 0xFF);
    out += dict;
    out.append(total - unpadded, ' ');
    out += '\n';
    return out;
  }
  return {};  // unreachable: version 2.0 takes 4 GiB headers
}

}  // namespace

NpyWriter::NpyWriter(const fs::path& path, NpyType type, std::vector<std::int64_t> shape) {
  const std::string where = path.string();
  for (std::int64_t d : shape)
    if (d < 0)
      refuse(where, "shape " + shape_text(shape) + " has a negative dimension; dimensions must be >= 0");
  std::int64_t row = static_cast<std::int64_t>(size_of(type)), total = 0;
  bool ok = true;
  for (std::size_t i = 1; i < shape.size(); ++i) ok = ok && checked_mul(row, shape[i], &row);
  rows_expected_ = shape.empty() ? 1 : shape[0];
  ok = ok && checked_mul(row, rows_expected_, &total);
  if (!ok)
    refuse(where,
           "shape " + shape_text(shape) + " of " + std::string(to_string(type)) + " overflows 64-bit sizes");
  row_bytes_ = static_cast<std::size_t>(row);

  const std::string header = npy_header(type, shape);
  file_ = model::OutputFile(path);
  file_.write(header.data(), header.size());
}

void NpyWriter::append(const void* rows, std::int64_t count) {
  const std::string where = file_.path().string();
  if (!file_.is_open())
    throw Error(ErrorKind::invalid_argument,
                where + ": append after " +
                    (file_.committed() ? "commit()" : "an earlier error abandoned the writer"));
  if (count < 0) {
    file_.abandon();
    refuse(where, "append of " + std::to_string(count) + " rows; the count must be >= 0");
  }
  if (count > rows_expected_ - rows_written_) {
    file_.abandon();
    refuse(where, "appending " + std::to_string(count) + " rows after " + std::to_string(rows_written_) +
                      " would exceed shape[0] = " + std::to_string(rows_expected_) + " rows");
  }
  const std::size_t bytes = static_cast<std::size_t>(count) * row_bytes_;  // <= the checked total
  if (bytes > 0 && !rows) {
    file_.abandon();
    refuse(where, "append of " + std::to_string(count) + " rows from a null pointer");
  }
  file_.write(rows, bytes);
  rows_written_ += count;
}

void NpyWriter::commit() {
  const std::string where = file_.path().string();
  if (!file_.is_open())
    throw Error(ErrorKind::invalid_argument,
                where + ": commit after " +
                    (file_.committed() ? "commit()" : "an earlier error abandoned the writer"));
  if (rows_written_ != rows_expected_) {
    file_.abandon();
    refuse(where, "commit after " + std::to_string(rows_written_) + " of shape[0] = " +
                      std::to_string(rows_expected_) + " rows; every row must be appended first");
  }
  file_.commit();
}

void save_npy(const fs::path& path, NpyType type, const std::vector<std::int64_t>& shape, const void* data) {
  NpyWriter writer(path, type, shape);
  writer.append(data, writer.rows_expected());
  writer.commit();
}

}  // namespace bnorm::exec
