// .npy / .npz reading and writing: round trips of every type through the
// writer, files written by numpy itself (make_npy_cases.py) read with exact
// values, numpy reading what bnorm writes, every refusal with its message,
// and damaged files (every truncation, every flipped byte) refused cleanly.

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "bnorm/error.hpp"
#include "exec/npy.hpp"

#if !defined(BNORM_NPY_CASES_DIR) || !defined(BNORM_NPY_CASES_SCRIPT) || !defined(BNORM_PYTHON)
#error "define BNORM_NPY_CASES_DIR (make_npy_cases.py's output), BNORM_NPY_CASES_SCRIPT and BNORM_PYTHON"
#endif

namespace bnorm::test {
namespace {

namespace fs = std::filesystem;
using exec::NpyArray;
using exec::NpyType;
using exec::NpyWriter;
using exec::NpzArchive;
using Bytes = std::vector<std::byte>;

const fs::path kCases = BNORM_NPY_CASES_DIR;

constexpr NpyType kTypes[] = {NpyType::f32, NpyType::f64, NpyType::f16, NpyType::i64,
                              NpyType::i32, NpyType::u8,  NpyType::i8,  NpyType::boolean};

// make_npy_cases.py's names of the types.
std::string case_name(NpyType t) {
  switch (t) {
    case NpyType::f32:
      return "f32";
    case NpyType::f64:
      return "f64";
    case NpyType::f16:
      return "f16";
    case NpyType::i64:
      return "i64";
    case NpyType::i32:
      return "i32";
    case NpyType::u8:
      return "u8";
    case NpyType::i8:
      return "i8";
    case NpyType::boolean:
      return "bool";
  }
  return "?";
}

// IEEE binary16 bits of a float that float16 represents exactly (0 or a
// normal number), enough for the multiples of 0.25 the cases use.
std::uint16_t half_bits(float x) {
  if (x == 0) return std::signbit(x) ? 0x8000 : 0;
  int exp = 0;
  const float m = std::frexp(std::fabs(x), &exp);  // |x| = m * 2^exp, m in [0.5, 1)
  const auto mantissa = static_cast<std::uint16_t>(std::lround((2 * m - 1) * 1024));
  return static_cast<std::uint16_t>((x < 0 ? 0x8000 : 0) | ((exp - 1 + 15) << 10) | mantissa);
}

template <typename T>
void put(Bytes& out, T v) {
  const auto at = out.size();
  out.resize(at + sizeof v);
  std::memcpy(out.data() + at, &v, sizeof v);
}

// The first n elements of the test array of type t, as make_npy_cases.py's
// value() computes them, in little-endian bytes (this machine's order).
Bytes values(NpyType t, std::int64_t n) {
  Bytes out;
  for (std::int64_t i = 0; i < n; ++i) {
    const double f = static_cast<double>(i % 23 - 11) * 0.25;
    switch (t) {
      case NpyType::f32:
        put(out, static_cast<float>(f));
        break;
      case NpyType::f64:
        put(out, f);
        break;
      case NpyType::f16:
        put(out, half_bits(static_cast<float>(f)));
        break;
      case NpyType::i64:
        put(out, static_cast<std::int64_t>((i - 6) * (std::int64_t{1} << 40) + 7));
        break;
      case NpyType::i32:
        put(out, static_cast<std::int32_t>((i - 6) * 100000 + 3));
        break;
      case NpyType::u8:
        put(out, static_cast<std::uint8_t>((i * 37) % 256));
        break;
      case NpyType::i8:
        put(out, static_cast<std::int8_t>((i * 37) % 256 - 128));
        break;
      case NpyType::boolean:
        put(out, static_cast<std::uint8_t>(i % 3 == 0));
        break;
    }
  }
  return out;
}

std::int64_t count_of(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

Bytes contents(const NpyArray& a) { return Bytes(a.data(), a.data() + a.size_bytes()); }

void expect_array(const NpyArray& a, NpyType type, const std::vector<std::int64_t>& shape) {
  EXPECT_EQ(a.type(), type) << a.source();
  EXPECT_EQ(a.shape(), shape) << a.source();
  EXPECT_EQ(a.element_count(), count_of(shape)) << a.source();
  EXPECT_EQ(a.rows(), shape.empty() ? 1 : shape[0]) << a.source();
  EXPECT_EQ(a.row_bytes() * static_cast<std::size_t>(a.rows()), a.size_bytes()) << a.source();
  EXPECT_EQ(a.size_bytes(), static_cast<std::size_t>(count_of(shape)) * exec::size_of(type)) << a.source();
  EXPECT_EQ(contents(a), values(type, count_of(shape))) << a.source();
}

Bytes read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::vector<char> c((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  Bytes b(c.size());
  std::memcpy(b.data(), c.data(), c.size());
  return b;
}

void write_file(const fs::path& p, const Bytes& b, std::size_t size) {
  // A new file rather than a truncated one: ext4 flushes a file truncated
  // and rewritten on close (auto_da_alloc), which made the sweeps slow.
  fs::remove(p);
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(size));
  ASSERT_TRUE(out.good()) << p;
}
void write_file(const fs::path& p, const Bytes& b) { write_file(p, b, b.size()); }

Bytes bytes_of(std::string_view s) {
  Bytes b(s.size());
  std::memcpy(b.data(), s.data(), s.size());
  return b;
}

// Expects fn to throw bnorm::Error of `kind` whose message holds every word.
void expect_error(const std::function<void()>& fn, ErrorKind kind, const std::vector<std::string>& words) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected " << to_string(kind) << " mentioning '" << words.front() << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    for (const auto& w : words)
      EXPECT_NE(std::string(e.what()).find(w), std::string::npos) << "'" << w << "' not in: " << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not a bnorm::Error: " << e.what();
  }
}

// Every offset of `sig` in b.
std::vector<std::size_t> find_all(const Bytes& b, std::string_view sig) {
  std::vector<std::size_t> at;
  for (std::size_t i = 0; i + sig.size() <= b.size(); ++i)
    if (std::memcmp(b.data() + i, sig.data(), sig.size()) == 0) at.push_back(i);
  return at;
}
void poke32(Bytes& b, std::size_t at, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = static_cast<std::byte>((v >> (8 * i)) & 0xFF);
}
void poke16(Bytes& b, std::size_t at, std::uint16_t v) {
  b[at] = static_cast<std::byte>(v & 0xFF);
  b[at + 1] = static_cast<std::byte>(v >> 8);
}
std::uint32_t peek32(const Bytes& b, std::size_t at) {
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | std::to_integer<std::uint32_t>(b[at + i]);
  return v;
}

// A file's permission bits in octal, as ls and chmod spell them ("600").
std::string mode_of(const fs::path& p) {
  char text[8];
  std::snprintf(text, sizeof text, "%o", static_cast<unsigned>(fs::status(p).permissions()) & 0777u);
  return text;
}

// A fresh directory per test, removed afterwards.
class Npy : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("bnorm_npy_test_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Names in the test directory, sorted (temporary files included).
  std::vector<std::string> listing() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

  // A .npy with the given header dict (padded like numpy's) and data bytes.
  fs::path npy_file(const std::string& name, const std::string& dict, const Bytes& data, int major = 1,
                    int minor = 0) {
    std::string head = "\x93NUMPY";
    head += static_cast<char>(major);
    head += static_cast<char>(minor);
    const std::size_t preamble = major == 1 ? 10 : 12;
    std::string text = dict;
    while ((preamble + text.size() + 1) % 64) text += ' ';
    text += '\n';
    for (std::size_t i = 0; i < preamble - 8; ++i) head += static_cast<char>((text.size() >> (8 * i)) & 0xFF);
    Bytes b = bytes_of(head + text);
    b.insert(b.end(), data.begin(), data.end());
    const fs::path p = dir_ / name;
    write_file(p, b);
    return p;
  }

  fs::path dir_;
};

// ---------------------------------------------------------------------------
// Writing

TEST_F(Npy, RoundTripOfEveryTypeAndShape) {
  const std::vector<std::vector<std::int64_t>> shapes = {{3, 4}, {}, {0, 5}, {2, 3, 4}, {7}, {5, 0}};
  for (NpyType t : kTypes) {
    for (const auto& shape : shapes) {
      const fs::path p = dir_ / ("x_" + case_name(t) + ".npy");
      const Bytes data = values(t, count_of(shape));
      exec::save_npy(p, t, shape, data.data());
      const NpyArray a = NpyArray::open(p);
      expect_array(a, t, shape);
      // numpy's layout: version 1.0, data at a multiple of 64 bytes.
      const Bytes raw = read_file(p);
      EXPECT_EQ(raw[6], std::byte{1});
      EXPECT_EQ((raw.size() - a.size_bytes()) % 64, 0u) << p;
      EXPECT_EQ(raw[raw.size() - a.size_bytes() - 1], std::byte{'\n'});
    }
  }
  EXPECT_EQ(listing().size(), 8u);  // one file per type, no temporaries
}

TEST_F(Npy, SizesAndNames) {
  EXPECT_EQ(exec::size_of(NpyType::f32), 4u);
  EXPECT_EQ(exec::size_of(NpyType::f64), 8u);
  EXPECT_EQ(exec::size_of(NpyType::f16), 2u);
  EXPECT_EQ(exec::size_of(NpyType::i64), 8u);
  EXPECT_EQ(exec::size_of(NpyType::i32), 4u);
  EXPECT_EQ(exec::size_of(NpyType::u8), 1u);
  EXPECT_EQ(exec::size_of(NpyType::i8), 1u);
  EXPECT_EQ(exec::size_of(NpyType::boolean), 1u);
  EXPECT_EQ(exec::to_string(NpyType::f32), "float32");
  EXPECT_EQ(exec::to_string(NpyType::f16), "float16");
  EXPECT_EQ(exec::to_string(NpyType::boolean), "bool");
  EXPECT_EQ(exec::npy_descr(NpyType::i64), "<i8");
  EXPECT_EQ(exec::npy_descr(NpyType::u8), "|u1");
}

TEST_F(Npy, ChunkedAppend) {
  const fs::path p = dir_ / "chunks.npy";
  const Bytes data = values(NpyType::f64, 30);
  NpyWriter w(p, NpyType::f64, {10, 3});
  EXPECT_EQ(w.row_bytes(), 24u);
  std::int64_t at = 0;
  for (std::int64_t n : {3, 0, 3, 1, 3}) {
    w.append(data.data() + at * 24, n);
    at += n;
  }
  EXPECT_EQ(w.rows_written(), 10);
  EXPECT_TRUE(listing().size() == 1 && listing()[0] != "chunks.npy");  // only the temporary so far
  w.commit();
  EXPECT_EQ(listing(), std::vector<std::string>{"chunks.npy"});
  expect_array(NpyArray::open(p), NpyType::f64, {10, 3});
}

TEST_F(Npy, TooManyRowsIsRefusedAndLeavesNoFile) {
  const Bytes data = values(NpyType::f32, 33);
  NpyWriter w(dir_ / "out.npy", NpyType::f32, {10, 3});
  w.append(data.data(), 4);
  expect_error([&] { w.append(data.data(), 7); }, ErrorKind::invalid_argument,
               {"out.npy", "7 rows", "after 4", "shape[0] = 10"});
  EXPECT_TRUE(listing().empty());
  // The writer is abandoned: later calls fail, still nothing on disk.
  expect_error([&] { w.commit(); }, ErrorKind::invalid_argument, {"out.npy", "abandoned"});
  expect_error([&] { w.append(data.data(), 1); }, ErrorKind::invalid_argument, {"abandoned"});
  EXPECT_TRUE(listing().empty());
}

TEST_F(Npy, TooFewRowsIsRefusedAndLeavesNoFile) {
  const Bytes data = values(NpyType::i32, 30);
  {
    NpyWriter w(dir_ / "out.npy", NpyType::i32, {10, 3});
    w.append(data.data(), 9);
    expect_error([&] { w.commit(); }, ErrorKind::invalid_argument, {"out.npy", "9 of shape[0] = 10"});
    EXPECT_TRUE(listing().empty());
  }
  EXPECT_TRUE(listing().empty());
  // save_npy cannot write a partial array either: a 0-d array needs its one row.
  expect_error([&] { exec::save_npy(dir_ / "s.npy", NpyType::f32, {}, nullptr); },
               ErrorKind::invalid_argument, {"s.npy", "null"});
  EXPECT_TRUE(listing().empty());
}

TEST_F(Npy, DestroyedWithoutCommitLeavesNoFile) {
  const Bytes data = values(NpyType::u8, 6);
  {
    NpyWriter w(dir_ / "out.npy", NpyType::u8, {2, 3});
    w.append(data.data(), 2);
    EXPECT_EQ(listing().size(), 1u);  // the temporary
  }
  EXPECT_TRUE(listing().empty());
}

TEST_F(Npy, FailedWriteKeepsThePreviousFile) {
  const fs::path p = dir_ / "out.npy";
  const Bytes old = values(NpyType::f32, 4);
  exec::save_npy(p, NpyType::f32, {4}, old.data());
  {
    NpyWriter w(p, NpyType::f32, {8});
    w.append(values(NpyType::f32, 8).data(), 5);
  }
  EXPECT_EQ(listing(), std::vector<std::string>{"out.npy"});
  expect_array(NpyArray::open(p), NpyType::f32, {4});
  // A committed writer replaces it.
  const Bytes next = values(NpyType::i64, 6);
  exec::save_npy(p, NpyType::i64, {2, 3}, next.data());
  expect_array(NpyArray::open(p), NpyType::i64, {2, 3});
  EXPECT_EQ(listing(), std::vector<std::string>{"out.npy"});
}

TEST_F(Npy, MovedWriterOwnsTheFile) {
  const Bytes data = values(NpyType::i8, 4);
  NpyWriter a(dir_ / "m.npy", NpyType::i8, {4});
  NpyWriter b(std::move(a));
  b.append(data.data(), 4);
  NpyWriter c(dir_ / "other.npy", NpyType::i8, {1});
  c = std::move(b);  // drops other.npy's temporary
  c.commit();
  EXPECT_EQ(listing(), std::vector<std::string>{"m.npy"});
  expect_array(NpyArray::open(dir_ / "m.npy"), NpyType::i8, {4});
}

// An output that is a symbolic link (e.g. current.npy -> runs/3.npy) keeps
// the link: the file it points to is replaced, in its own directory.
TEST_F(Npy, WritesThroughASymlinkAndKeepsIt) {
  fs::create_directory(dir_ / "runs");
  const Bytes old = values(NpyType::f32, 4);
  exec::save_npy(dir_ / "runs" / "3.npy", NpyType::f32, {4}, old.data());
  fs::create_symlink("runs/3.npy", dir_ / "current.npy");
  const Bytes next = values(NpyType::i64, 6);
  exec::save_npy(dir_ / "current.npy", NpyType::i64, {2, 3}, next.data());
  ASSERT_TRUE(fs::is_symlink(dir_ / "current.npy")) << "the link was replaced by a file";
  EXPECT_EQ(fs::read_symlink(dir_ / "current.npy"), "runs/3.npy");
  expect_array(NpyArray::open(dir_ / "runs" / "3.npy"), NpyType::i64, {2, 3});
  EXPECT_EQ(listing(), (std::vector<std::string>{"current.npy", "runs"}));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_ / "runs"), fs::directory_iterator()), 1);
}

// Overwriting keeps the existing file's permission bits; a new file gets
// 0666 & ~umask, as any file the user creates.
TEST_F(Npy, OverwriteKeepsPermissionBits) {
  const Bytes data = values(NpyType::f32, 4);
  struct RestoreUmask {
    mode_t saved = ::umask(022);
    ~RestoreUmask() { ::umask(saved); }
  } restore;
  for (const char* mode : {"600", "640", "444"}) {
    const fs::path p = dir_ / "out.npy";
    exec::save_npy(p, NpyType::f32, {4}, data.data());
    fs::permissions(p, fs::perms(std::stoi(mode, nullptr, 8)));
    exec::save_npy(p, NpyType::f32, {4}, data.data());
    EXPECT_EQ(mode_of(p), mode);
    fs::remove(p);
  }
  ::umask(027);
  exec::save_npy(dir_ / "new.npy", NpyType::f32, {4}, data.data());
  EXPECT_EQ(mode_of(dir_ / "new.npy"), "640");
}

TEST_F(Npy, WriterRefusesBadArguments) {
  expect_error(
      [&] {
        NpyWriter(dir_ / "n.npy", NpyType::f32, {3, -2});
      },
      ErrorKind::invalid_argument, {"n.npy", "(3, -2)", "negative"});
  expect_error(
      [&] {
        NpyWriter(dir_ / "n.npy", NpyType::f64, {std::int64_t{1} << 31, std::int64_t{1} << 31, 4});
      },
      ErrorKind::invalid_argument, {"n.npy", "(2147483648, 2147483648, 4)", "overflows"});
  expect_error([&] { NpyWriter(dir_ / "missing" / "n.npy", NpyType::f32, {1}); }, ErrorKind::io,
               {"n.npy", "missing", "temporary"});
  NpyWriter w(dir_ / "n.npy", NpyType::f32, {3});
  expect_error([&] { w.append(nullptr, 2); }, ErrorKind::invalid_argument, {"n.npy", "null"});
  NpyWriter v(dir_ / "v.npy", NpyType::f32, {3});
  expect_error([&] { v.append(nullptr, -1); }, ErrorKind::invalid_argument, {"v.npy", "-1", ">= 0"});
  EXPECT_TRUE(listing().empty());
}

TEST_F(Npy, NumpyReadsWhatBnormWrites) {
  const std::vector<std::vector<std::int64_t>> shapes = {{3, 4}, {}, {0, 5}, {2, 3, 4}};
  for (NpyType t : kTypes)
    for (const auto& shape : shapes) {
      std::string tag;
      for (auto d : shape) {
        if (!tag.empty()) tag += 'x';
        tag += std::to_string(d);
      }
      exec::save_npy(dir_ / (case_name(t) + "_" + (shape.empty() ? "scalar" : tag) + ".npy"), t, shape,
                     values(t, count_of(shape)).data());
    }
  const std::string cmd =
      std::string(BNORM_PYTHON) + " " + BNORM_NPY_CASES_SCRIPT + " --check " + dir_.string();
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

// ---------------------------------------------------------------------------
// Reading files that numpy wrote

TEST_F(Npy, NumpySaveOfEveryType) {
  for (NpyType t : kTypes) expect_array(NpyArray::open(kCases / (case_name(t) + ".npy")), t, {3, 4});
}

TEST_F(Npy, NumpySaveOfOtherShapes) {
  const NpyArray cube = NpyArray::open(kCases / "f32_3d.npy");
  expect_array(cube, NpyType::f32, {2, 3, 4});
  EXPECT_EQ(cube.rows(), 2);
  EXPECT_EQ(cube.row_bytes(), 48u);
  EXPECT_EQ(cube.row(1), cube.data() + 48);
  expect_array(NpyArray::open(kCases / "f32_1d.npy"), NpyType::f32, {5});
  EXPECT_EQ(NpyArray::open(kCases / "f32_1d.npy").row_bytes(), 4u);

  const NpyArray scalar = NpyArray::open(kCases / "f64_scalar.npy");
  EXPECT_TRUE(scalar.shape().empty());
  EXPECT_EQ(scalar.rows(), 1);
  EXPECT_EQ(scalar.row_bytes(), 8u);
  double d = 0;
  std::memcpy(&d, scalar.row(0), 8);
  EXPECT_EQ(d, 3.5);
  const NpyArray iscalar = NpyArray::open(kCases / "i64_scalar.npy");
  std::int64_t i = 0;
  iscalar.copy_rows(0, 1, &i);
  EXPECT_EQ(i, -7);

  const NpyArray empty = NpyArray::open(kCases / "f32_empty.npy");
  EXPECT_EQ(empty.shape(), (std::vector<std::int64_t>{0, 3}));
  EXPECT_EQ(empty.rows(), 0);
  EXPECT_EQ(empty.row_bytes(), 12u);
  EXPECT_EQ(empty.size_bytes(), 0u);
  const NpyArray empty1 = NpyArray::open(kCases / "u8_empty.npy");
  EXPECT_EQ(empty1.rows(), 0);
  EXPECT_EQ(empty1.type(), NpyType::u8);
}

TEST_F(Npy, NumpyFloatSpecialsKeepTheirBits) {
  const NpyArray a = NpyArray::open(kCases / "f32_specials.npy");
  ASSERT_EQ(a.shape(), (std::vector<std::int64_t>{7}));
  float v[7];
  a.copy_rows(0, 7, v);
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(v[0], 0.0f);
  EXPECT_FALSE(std::signbit(v[0]));
  EXPECT_TRUE(v[1] == 0.0f && std::signbit(v[1]));
  EXPECT_EQ(v[2], inf);
  EXPECT_EQ(v[3], -inf);
  EXPECT_TRUE(std::isnan(v[4]));
  EXPECT_EQ(v[5], std::numeric_limits<float>::denorm_min());
  EXPECT_EQ(v[6], std::numeric_limits<float>::max());
}

TEST_F(Npy, NumpyFormatVersions2And3) {
  expect_array(NpyArray::open(kCases / "f32_v2.npy"), NpyType::f32, {3, 4});
  expect_array(NpyArray::open(kCases / "f32_v3.npy"), NpyType::f32, {3, 4});
  EXPECT_EQ(read_file(kCases / "f32_v2.npy")[6], std::byte{2});
  EXPECT_EQ(read_file(kCases / "f32_v3.npy")[6], std::byte{3});
}

TEST_F(Npy, NumpyArraysThatAreRefused) {
  const auto open = [](const char* name) { return [name] { NpyArray::open(kCases / name); }; };
  const auto bad = ErrorKind::invalid_argument;
  expect_error(open("fortran.npy"), bad, {"fortran.npy", "Fortran order", "np.ascontiguousarray"});
  expect_error(open("big_endian.npy"), bad, {"big_endian.npy", "'>f4'", "big-endian", "astype('<f4')"});
  expect_error(open("object.npy"), bad, {"object.npy", "'|O'", "object"});
  expect_error(open("structured.npy"), bad, {"structured.npy", "structured"});
  expect_error(open("unicode.npy"), bad, {"unicode.npy", "'<U2'", "string"});
  expect_error(open("uint32.npy"), bad, {"uint32.npy", "'<u4'", "not supported", "float32 '<f4'"});
  expect_error(open("complex64.npy"), bad, {"complex64.npy", "'<c8'", "not supported"});
}

// ---------------------------------------------------------------------------
// .npz

TEST_F(Npy, NumpySavez) {
  const NpzArchive z = NpzArchive::open(kCases / "two.npz");
  EXPECT_EQ(z.names(), (std::vector<std::string>{"a", "b"}));
  expect_array(z.array("a"), NpyType::f32, {3, 4});
  expect_array(z.array("b.npy"), NpyType::i64, {3, 4});
  EXPECT_TRUE(z.contains("a") && z.contains("b.npy") && !z.contains("c"));
  EXPECT_NE(z.array("a").source().find("two.npz member 'a.npy'"), std::string::npos);

  const NpzArchive pos = NpzArchive::open(kCases / "positional.npz");
  EXPECT_EQ(pos.names(), (std::vector<std::string>{"arr_0", "arr_1"}));
  expect_array(pos.array("arr_0"), NpyType::f32, {3, 4});
  expect_array(pos.array("arr_1"), NpyType::u8, {3, 4});
}

void expect_every(const NpzArchive& z) {
  std::vector<std::string> names;
  for (NpyType t : kTypes) names.push_back(case_name(t));
  names.insert(names.end(), {"scalar", "empty", "big"});
  EXPECT_EQ(z.names(), names);
  for (NpyType t : kTypes) expect_array(z.array(case_name(t)), t, {3, 4});
  const NpyArray scalar = z.array("scalar");
  double d = 0;
  scalar.copy_rows(0, 1, &d);
  EXPECT_TRUE(scalar.shape().empty());
  EXPECT_EQ(d, 3.5);
  EXPECT_EQ(z.array("empty").shape(), (std::vector<std::int64_t>{0, 3}));
  const NpyArray big = z.array("big");
  ASSERT_EQ(big.shape(), (std::vector<std::int64_t>{1000, 100}));
  ASSERT_EQ(big.type(), NpyType::f64);
  std::vector<double> v(100000);
  big.copy_rows(0, 1000, v.data());
  for (std::size_t i = 0; i < v.size(); ++i) ASSERT_EQ(v[i], 0.5 * static_cast<double>(i)) << i;
  std::memcpy(v.data(), big.row(999), big.row_bytes());
  EXPECT_EQ(v[99], 0.5 * 99999);
}

TEST_F(Npy, NumpySavezOfEveryType) { expect_every(NpzArchive::open(kCases / "every.npz")); }

TEST_F(Npy, NumpySavezCompressed) {
  expect_every(NpzArchive::open(kCases / "every_compressed.npz"));
  const NpzArchive z = NpzArchive::open(kCases / "compressed_two.npz");
  expect_array(z.array("a"), NpyType::f32, {3, 4});
  expect_array(z.array("b"), NpyType::boolean, {3, 4});
}

TEST_F(Npy, Zip64EndRecordAndCentralExtraFields) {
  for (const char* name : {"zip64_full.npz", "zip64_full_compressed.npz"}) {
    const NpzArchive z = NpzArchive::open(kCases / name);
    EXPECT_EQ(z.names(), (std::vector<std::string>{"a", "b"})) << name;
    expect_array(z.array("a"), NpyType::f32, {3, 4});
    expect_array(z.array("b"), NpyType::i64, {3, 4});
  }
}

TEST_F(Npy, OtherZipLayouts) {
  for (const char* name : {"data_descriptor.npz", "data_descriptor_compressed.npz"}) {
    const NpzArchive z = NpzArchive::open(kCases / name);
    expect_array(z.array("a"), NpyType::f32, {3, 4});
    expect_array(z.array("b"), NpyType::i64, {3, 4});
  }
  const NpzArchive plain = NpzArchive::open(kCases / "plain_zip.npz");  // no zip64, a comment at the end
  EXPECT_EQ(plain.names(), std::vector<std::string>{"a"});
  expect_array(plain.array("a"), NpyType::f32, {3, 4});
  const NpzArchive empty = NpzArchive::open(kCases / "empty.npz");
  EXPECT_TRUE(empty.names().empty());
  expect_error([&] { empty.array("a"); }, ErrorKind::invalid_argument, {"empty.npz", "'a'", "empty"});
}

TEST_F(Npy, ArraysOutliveTheirArchive) {
  std::vector<NpyArray> kept;
  {
    const NpzArchive stored = NpzArchive::open(kCases / "two.npz");
    const NpzArchive deflated = NpzArchive::open(kCases / "compressed_two.npz");
    kept.push_back(stored.array("a"));
    kept.push_back(deflated.array("b"));
  }
  NpyArray moved = std::move(kept[0]);
  expect_array(moved, NpyType::f32, {3, 4});
  expect_array(kept[1], NpyType::boolean, {3, 4});
}

TEST_F(Npy, MissingMemberNamesThePresentOnes) {
  const NpzArchive z = NpzArchive::open(kCases / "two.npz");
  expect_error([&] { z.array("weights"); }, ErrorKind::invalid_argument,
               {"two.npz", "'weights'", "'a', 'b'"});
}

TEST_F(Npy, NpzRefusals) {
  const auto open = [](const char* name) { return [name] { NpzArchive::open(kCases / name); }; };
  const auto bad = ErrorKind::invalid_argument;
  expect_error(open("bzip2.npz"), bad, {"bzip2.npz", "'a.npy'", "bzip2", "stored or deflated"});
  expect_error(open("lzma.npz"), bad, {"lzma.npz", "lzma"});
  expect_error(open("not_npy_member.npz"), bad, {"not_npy_member.npz", "'readme.txt'", ".npy"});
  expect_error(open("duplicate.npz"), bad, {"duplicate.npz", "two members", "'a.npy'"});
  expect_error(open("f32.npy"), bad, {"f32.npy", "not a .npz"});
  const NpzArchive z = NpzArchive::open(kCases / "big_endian_member.npz");
  expect_error([&] { z.array("a"); }, bad, {"big_endian_member.npz member 'a.npy'", "'>f4'", "big-endian"});
}

// Damaged central directories and members, made by patching numpy's files.
TEST_F(Npy, DamagedZipStructures) {
  const auto bad = ErrorKind::invalid_argument;
  const Bytes two = read_file(kCases / "two.npz");
  const auto central = find_all(two, "PK\x01\x02");
  const auto locals = find_all(two, "PK\x03\x04");
  const auto eocd = find_all(two, "PK\x05\x06");
  ASSERT_EQ(central.size(), 2u);
  ASSERT_EQ(eocd.size(), 1u);
  const auto patched = [&](const Bytes& b, const char* name) {
    const fs::path p = dir_ / name;
    write_file(p, b);
    return [p] {
      const NpzArchive z = NpzArchive::open(p);
      for (const auto& n : z.names()) z.array(n);
    };
  };
  {
    Bytes b = two;
    poke16(b, central[1] + 8, 1);  // general purpose flags: encrypted
    expect_error(patched(b, "enc.npz"), bad, {"enc.npz", "'b.npy'", "encrypted"});
  }
  {
    Bytes b = two;
    poke16(b, central[0] + 10, 12);  // method: bzip2
    expect_error(patched(b, "m.npz"), bad, {"m.npz", "'a.npy'", "bzip2"});
    poke16(b, central[0] + 10, 99);
    expect_error(patched(b, "m.npz"), bad, {"method 99"});
  }
  {
    Bytes b = two;
    poke32(b, locals[1] + 14, 0x12345678);  // local CRC disagrees with the directory
    expect_error(patched(b, "crc.npz"), bad, {"crc.npz", "'b.npy'", "disagree"});
  }
  {
    Bytes b = two;
    poke32(b, central[1] + 42, static_cast<std::uint32_t>(locals[1] + 1));  // local header offset
    expect_error(patched(b, "off.npz"), bad, {"off.npz", "'b.npy'", "no local header"});
  }
  {
    Bytes b = two;
    poke32(b, eocd[0] + 16, peek32(b, eocd[0] + 16) - 1);  // central directory offset
    expect_error(patched(b, "cd.npz"), bad, {"cd.npz", "central directory"});
  }
  {
    Bytes b = two;
    poke16(b, eocd[0] + 20, 5);  // a comment that is not there
    expect_error(patched(b, "eocd.npz"), bad, {"eocd.npz", "end-of-central-directory"});
  }
  {
    Bytes b = two;
    poke16(b, eocd[0] + 8, 3);  // entries on this disk != total
    poke16(b, eocd[0] + 10, 3);
    expect_error(patched(b, "n.npz"), bad, {"n.npz"});
  }
  {
    // Sizes marked as zip64 without a zip64 extra field in the central directory.
    Bytes b = two;
    poke32(b, central[0] + 24, 0xFFFFFFFF);
    poke16(b, central[0] + 30, 0);  // no extra field...
    b.erase(
        b.begin() + static_cast<std::ptrdiff_t>(central[0] + 46 + 5),
        b.begin() + static_cast<std::ptrdiff_t>(central[0] + 46 + 5 + peek32(two, central[0] + 30) % 65536));
    expect_error(patched(b, "z64.npz"), bad, {"z64.npz", "'a.npy'", "zip64 extra field is missing"});
  }

  // A deflated member: wrong CRC, wrong sizes (the data descriptor file
  // does not repeat them in the local header, so only the directory lies).
  const Bytes dd = read_file(kCases / "data_descriptor_compressed.npz");
  const auto dd_central = find_all(dd, "PK\x01\x02");
  ASSERT_EQ(dd_central.size(), 2u);
  {
    Bytes b = dd;
    poke32(b, dd_central[0] + 16, peek32(b, dd_central[0] + 16) ^ 1);
    expect_error(patched(b, "crc32.npz"), bad, {"crc32.npz member 'a.npy'", "CRC-32"});
  }
  const std::uint32_t usize = peek32(dd, dd_central[0] + 24);
  {
    Bytes b = dd;
    poke32(b, dd_central[0] + 24, usize + 1);
    expect_error(patched(b, "long.npz"), bad,
                 {"long.npz member 'a.npy'", "inflates to " + std::to_string(usize)});
  }
  {
    Bytes b = dd;
    poke32(b, dd_central[0] + 24, usize - 1);
    expect_error(patched(b, "short.npz"), bad, {"short.npz member 'a.npy'", "more than"});
  }
  {
    Bytes b = dd;
    poke32(b, dd_central[0] + 24, 0x7FFFFFFF);  // a zip bomb's claim
    expect_error(patched(b, "bomb.npz"), bad, {"bomb.npz", "'a.npy'", "deflate"});
  }
  {
    Bytes b = dd;
    poke32(b, dd_central[0] + 20, peek32(b, dd_central[0] + 20) - 10);  // compressed size too small
    expect_error(patched(b, "cut.npz"), bad, {"cut.npz member 'a.npy'", "compressed data"});
  }
}

// ---------------------------------------------------------------------------
// Hand-made headers: every rule of the header parser.

TEST_F(Npy, HeaderSyntaxThatIsAccepted) {
  const Bytes f = values(NpyType::f32, 3);
  // Key order, quotes, spacing and a missing trailing comma do not matter.
  expect_array(
      NpyArray::open(npy_file("a.npy", "{ \"shape\" : (3,),'fortran_order':False , 'descr':'<f4'}", f)),
      NpyType::f32, {3});
  // Python 2 wrote long integers with an L.
  expect_array(
      NpyArray::open(npy_file("b.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (3L,), }", f)),
      NpyType::f32, {3});
  // Byte order is meaningless for one-byte types.
  for (const char* d : {"'>u1'", "'<u1'", "'u1'", "'=u1'"})
    expect_array(NpyArray::open(npy_file(
                     "c.npy", std::string("{'descr': ") + d + ", 'fortran_order': False, 'shape': (3,)}",
                     values(NpyType::u8, 3))),
                 NpyType::u8, {3});
  // A version 2.0 header longer than version 1.0's 16-bit length allows.
  const NpyArray v2 = NpyArray::open(npy_file(
      "v2.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (3,)}" + std::string(70000, ' '), f, 2));
  expect_array(v2, NpyType::f32, {3});
  // Fortran order of an array whose bytes are the same in C order.
  expect_array(NpyArray::open(npy_file("d.npy", "{'descr': '<f4', 'fortran_order': True, 'shape': (3,)}", f)),
               NpyType::f32, {3});
  expect_array(
      NpyArray::open(npy_file("e.npy", "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 3, 1)}", f)),
      NpyType::f32, {1, 3, 1});
  EXPECT_EQ(NpyArray::open(npy_file("f.npy", "{'descr': '<f4', 'fortran_order': True, 'shape': (0, 4)}", {}))
                .rows(),
            0);
  // A header without padding, data at an odd offset.
  Bytes raw = bytes_of(std::string("\x93NUMPY\x01\x00", 8));
  const std::string dict = "{'descr':'<f4','fortran_order':False,'shape':(3,)}";
  raw.push_back(static_cast<std::byte>(dict.size()));
  raw.push_back(std::byte{0});
  const Bytes text = bytes_of(dict);
  raw.insert(raw.end(), text.begin(), text.end());
  raw.insert(raw.end(), f.begin(), f.end());
  write_file(dir_ / "g.npy", raw);
  expect_array(NpyArray::open(dir_ / "g.npy"), NpyType::f32, {3});
}

TEST_F(Npy, HeaderRefusals) {
  const auto bad = ErrorKind::invalid_argument;
  const Bytes f12 = values(NpyType::f32, 12);
  const auto header = [&](const std::string& dict, const Bytes& data = {}) {
    const fs::path p = npy_file("h.npy", dict, data);
    return [p] { NpyArray::open(p); };
  };
  expect_error(header("{'descr': '<f4', 'fortran_order': False}"), bad, {"h.npy", "lacks 'shape'"});
  expect_error(header("{'descr': '<f4', 'shape': (3,)}"), bad, {"lacks 'fortran_order'"});
  expect_error(header("{'fortran_order': False, 'shape': (3,)}"), bad, {"lacks 'descr'"});
  expect_error(header("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), 'x': 1}"), bad,
               {"h.npy", "unexpected key 'x'"});
  expect_error(header("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), 'shape': (3,)}"), bad,
               {"'shape' twice"});
  expect_error(header("{'descr': '<f4', 'fortran_order': False, 'shape': (3)}"), bad,
               {"h.npy", "not a tuple"});
  expect_error(header("{'descr': '<f4', 'fortran_order': False, 'shape': [3]}"), bad, {"not a tuple"});
  expect_error(header("{'descr': '<f4', 'fortran_order': False, 'shape': (True,)}"), bad, {"not a tuple"});
  expect_error(header("{'descr': '<f4', 'fortran_order': 0, 'shape': (3,)}"), bad,
               {"'fortran_order'", "True or False"});
  expect_error(header("{'descr': '<f4, 'fortran_order': False, 'shape': (3,)}"), bad,
               {"h.npy", "not a valid .npy header"});
  expect_error(header("{'descr': '<f4', 'fortran_order': False, 'shape': (3,)"), bad,
               {"not a valid .npy header"});
  expect_error(header("{'descr': '<f4', 'fortran_order': False, 'shape': (3,)} x"), bad,
               {"not a valid .npy header"});
  expect_error(header("hello"), bad, {"not a valid .npy header"});
  expect_error(header("[1, 2]"), bad, {"not a dict"});
  expect_error(header(""), bad, {"not a valid .npy header"});
  expect_error(header("{'descr': " + std::string(200, '[') + std::string(200, ']') +
                      ", 'fortran_order': False, 'shape': ()}"),
               bad, {"nesting"});
  expect_error(header("{'descr': '<f4', 'fortran_order': False, 'shape': (3, -1)}"), bad,
               {"h.npy", "(3, -1)", "negative"});
  expect_error(header("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}"), bad,
               {"h.npy", "64 bits"});
  expect_error(header("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296)}"), bad,
               {"h.npy", "(4294967296, 4294967296)", "overflows"});
  expect_error(header("{'descr': '<f8', 'fortran_order': False, 'shape': (0, 4611686018427387904, 4)}"), bad,
               {"overflows"});
  expect_error(header("{'descr': '<f4', 'fortran_order': True, 'shape': (3, 4)}", f12), bad,
               {"h.npy", "(3, 4)", "Fortran order", "np.ascontiguousarray"});
  expect_error(header("{'descr': '|f4', 'fortran_order': False, 'shape': (3,)}"), bad,
               {"'|f4'", "little-endian", "'<f4'"});
  expect_error(header("{'descr': 'f8', 'fortran_order': False, 'shape': (3,)}"), bad, {"'f8'", "'<f8'"});
  expect_error(header("{'descr': '>i8', 'fortran_order': False, 'shape': (3,)}"), bad,
               {"'>i8'", "big-endian", "astype('<i8')"});
  expect_error(header("{'descr': '>u4', 'fortran_order': False, 'shape': (3,)}"), bad,
               {"'>u4'", "big-endian"});
  expect_error(header("{'descr': ('<f4', (2,)), 'fortran_order': False, 'shape': (3,)}"), bad,
               {"not a dtype string"});
  expect_error(header("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3,)}"), bad,
               {"structured"});
  expect_error(header("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4)}", values(NpyType::f32, 11)),
               bad, {"h.npy", "truncated", "needs 48 bytes", "only 44"});
  expect_error(header("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4)}", values(NpyType::f32, 13)),
               bad, {"h.npy", "4 bytes follow the data"});
}

TEST_F(Npy, PreambleRefusals) {
  const auto bad = ErrorKind::invalid_argument;
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (3,)}";
  const Bytes f = values(NpyType::f32, 3);
  const auto open = [](const fs::path& p) { return [p] { NpyArray::open(p); }; };
  expect_error(open(npy_file("v4.npy", dict, f, 4)), bad, {"v4.npy", "version 4.0", "1.0, 2.0 and 3.0"});
  expect_error(open(npy_file("v11.npy", dict, f, 1, 1)), bad, {"version 1.1"});
  expect_error(open(npy_file("v0.npy", dict, f, 0)), bad, {"version 0.0"});
  expect_array(NpyArray::open(npy_file("v2.npy", dict, f, 2, 0)), NpyType::f32, {3});
  Bytes b = read_file(kCases / "f32.npy");
  b[5] = std::byte{'X'};
  write_file(dir_ / "magic.npy", b);
  expect_error(open(dir_ / "magic.npy"), bad, {"magic.npy", "not a .npy", "magic"});
  write_file(dir_ / "empty.npy", {});
  expect_error(open(dir_ / "empty.npy"), bad, {"empty.npy", "not a .npy"});
  b = read_file(kCases / "f32.npy");
  poke16(b, 8, 0xFFF0);  // a header longer than the file
  write_file(dir_ / "long.npy", b);
  expect_error(open(dir_ / "long.npy"), bad, {"long.npy", "truncated", "65520"});
}

TEST_F(Npy, FilesThatCannotBeOpened) {
  expect_error([&] { NpyArray::open(dir_ / "nothing.npy"); }, ErrorKind::io, {"cannot open", "nothing.npy"});
  expect_error([&] { NpzArchive::open(dir_ / "nothing.npz"); }, ErrorKind::io,
               {"cannot open", "nothing.npz"});
  expect_error([&] { NpyArray::open(dir_); }, ErrorKind::io, {dir_.string(), "not a regular file"});
  expect_error([&] { NpzArchive::open(dir_); }, ErrorKind::io, {"not a regular file"});
}

TEST_F(Npy, RowAccessIsChecked) {
  const NpyArray a = NpyArray::open(kCases / "f32.npy");
  EXPECT_EQ(a.row(2), a.data() + 32);
  expect_error([&] { a.row(3); }, ErrorKind::invalid_argument, {"f32.npy", "row 3", "3 rows"});
  expect_error([&] { a.row(-1); }, ErrorKind::invalid_argument, {"row -1"});
  float out[12];
  a.copy_rows(1, 2, out);
  EXPECT_EQ(std::memcmp(out, a.row(1), 32), 0);
  a.copy_rows(3, 0, nullptr);
  expect_error([&] { a.copy_rows(2, 2, out); }, ErrorKind::invalid_argument, {"f32.npy", "out of range"});
  expect_error([&] { a.copy_rows(-1, 1, out); }, ErrorKind::invalid_argument, {"out of range"});
}

// ---------------------------------------------------------------------------
// Damaged files: never a crash, never a read out of bounds (run under ASan).

TEST_F(Npy, EveryTruncationOfANpyIsRefused) {
  for (const char* name :
       {"f32.npy", "f64_scalar.npy", "f32_empty.npy", "f32_v2.npy", "f32_v3.npy", "bool.npy"}) {
    const Bytes b = read_file(kCases / name);
    for (std::size_t n = 0; n < b.size(); ++n) {
      write_file(dir_ / "t.npy", b, n);
      expect_error([&] { NpyArray::open(dir_ / "t.npy"); }, ErrorKind::invalid_argument, {"t.npy"});
      if (HasFailure()) FAIL() << name << " truncated to " << n << " bytes";
    }
  }
}

TEST_F(Npy, EveryTruncationOfANpzIsRefused) {
  for (const char* name : {"two.npz", "compressed_two.npz", "zip64_full.npz", "zip64_full_compressed.npz",
                           "data_descriptor.npz", "plain_zip.npz", "every_compressed.npz"}) {
    const Bytes b = read_file(kCases / name);
    // Every length for small files; a stride through the big one's data and
    // every length of its last kilobyte (the directory).
    for (std::size_t n = 0; n < b.size(); n += (b.size() > 4096 && n + 1024 < b.size()) ? 97 : 1) {
      write_file(dir_ / "t.npz", b, n);
      expect_error([&] { NpzArchive::open(dir_ / "t.npz"); }, ErrorKind::invalid_argument, {"t.npz"});
      if (HasFailure()) FAIL() << name << " truncated to " << n << " bytes";
    }
  }
}

TEST_F(Npy, EveryFlippedByteIsReadOrRefused) {
  for (const char* name : {"f32.npy", "f32_v3.npy", "two.npz", "compressed_two.npz", "zip64_full.npz",
                           "zip64_full_compressed.npz", "data_descriptor_compressed.npz"}) {
    const bool npz = std::string(name).ends_with(".npz");
    const Bytes b = read_file(kCases / name);
    for (std::size_t i = 0; i < b.size(); ++i) {
      for (std::byte mask : {std::byte{0xFF}, std::byte{0x01}}) {
        Bytes c = b;
        c[i] ^= mask;
        const fs::path p = dir_ / (npz ? "c.npz" : "c.npy");
        write_file(p, c);
        try {
          if (!npz) {
            NpyArray::open(p);
            continue;
          }
          const NpzArchive z = NpzArchive::open(p);
          for (const auto& n : z.names()) {
            const NpyArray a = z.array(n);
            // Every member, stored or deflated, is checked against its CRC:
            // what it yields is what numpy wrote.
            if (a.type() == NpyType::f32) {
              EXPECT_EQ(contents(a), values(NpyType::f32, 12)) << name << " byte " << i;
            }
          }
        } catch (const Error& e) {
          EXPECT_EQ(e.kind(), ErrorKind::invalid_argument) << name << " byte " << i << ": " << e.what();
        } catch (const std::exception& e) {
          ADD_FAILURE() << name << " byte " << i << ": not a bnorm::Error: " << e.what();
        }
      }
      if (HasFailure()) FAIL() << name << " byte " << i;
    }
  }
}

// ---------------------------------------------------------------------------
// Memory mapping: a 5 GiB array (sparse on disk) opens without being read.

TEST_F(Npy, LargeFileIsMappedNotRead) {
  const std::int64_t rows = (std::int64_t{5} << 30) / 4096;  // 5 GiB of f32 rows of 4 KiB
  const fs::path p = dir_ / "large.npy";
  // A header and one row, then a hole instead of the rest of the data.
  const Bytes one = values(NpyType::f32, 1024);
  std::string dict =
      "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", 1024), }";
  npy_file("large.npy", dict, one);
  const std::uintmax_t header = fs::file_size(p) - one.size();
  std::error_code ec;
  fs::resize_file(p, header + static_cast<std::uintmax_t>(rows) * 4096, ec);
  if (ec) GTEST_SKIP() << "cannot make a 5 GiB sparse file here: " << ec.message();

  rusage before{}, after{};
  getrusage(RUSAGE_SELF, &before);
  const NpyArray a = NpyArray::open(p);
  EXPECT_EQ(a.rows(), rows);
  EXPECT_EQ(a.size_bytes(), static_cast<std::size_t>(rows) * 4096);
  EXPECT_EQ(std::memcmp(a.row(0), one.data(), 4096), 0);
  float last[1024];
  a.copy_rows(rows - 1, 1, last);
  EXPECT_EQ(last[1023], 0.0f);
  getrusage(RUSAGE_SELF, &after);
  EXPECT_LT(after.ru_maxrss - before.ru_maxrss, 64 * 1024)
      << "KiB of peak memory grew while opening a 5 GiB file";
}

}  // namespace
}  // namespace bnorm::test
