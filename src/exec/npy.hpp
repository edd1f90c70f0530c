// NumPy .npy and .npz files for the executor: memory-mapped reading of
// arrays (from .npy files and from the members of .npz archives) and writing
// of .npy files through a temporary file renamed into place.
//
// Only what the executor feeds and produces is supported: little-endian
// numeric and bool dtypes in C order. Anything else (big-endian, object,
// structured, string dtypes, Fortran order) is refused with an Error that
// says how to re-save the array.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "model/output_file.hpp"

namespace bnorm::exec {

/// The element types read and written ('<f4' '<f8' '<f2' '<i8' '<i4' '|u1'
/// '|i1' '|b1' in NumPy's notation).
enum class NpyType { f32, f64, f16, i64, i32, u8, i8, boolean };

/// Bytes of one element of `type`.
std::size_t size_of(NpyType type);

/// NumPy's name of `type`: "float32", "float64", "float16", "int64",
/// "int32", "uint8", "int8", "bool".
std::string_view to_string(NpyType type);

/// NumPy's descr of `type` as written in a .npy header, e.g. "<f4", "|u1".
std::string_view npy_descr(NpyType type);

/// A read-only array of a .npy file or of a member of a .npz archive.
///
/// A .npy file, and a stored (uncompressed) .npz member, is memory-mapped
/// (read-only, MAP_PRIVATE): opening reads only the header, and the data is
/// paged in as it is touched, so a file larger than memory can be streamed
/// row by row. A deflated member of a .npz (np.savez_compressed) cannot be
/// mapped: it is inflated into memory as a whole when the array is opened.
///
/// data() is aligned as the file places it: numpy pads .npy headers so that
/// the data of a .npy file starts at a multiple of 64 bytes, but the data of
/// a stored .npz member starts wherever the zip layout puts it, often at an
/// odd address. Read elements with std::memcpy (or copy_rows), never through
/// a reinterpret_cast'ed float* or int64_t*.
///
/// The mapping stays valid while the NpyArray lives (also after the
/// NpzArchive it came from is destroyed). Truncating the file while it is
/// mapped makes later reads fault (SIGBUS); that is the nature of mmap.
/// Movable, not copyable.
class NpyArray {
 public:
  /// Opens a .npy file (versions 1.0, 2.0 and 3.0). Throws Error(io) when
  /// the file cannot be opened or mapped, Error(invalid_argument) when it is
  /// not a well-formed .npy of a supported dtype in C order, or when its
  /// size disagrees with its header (truncated, or bytes after the data).
  static NpyArray open(const std::filesystem::path& path);

  NpyArray(NpyArray&&) noexcept = default;
  NpyArray& operator=(NpyArray&&) noexcept = default;
  NpyArray(const NpyArray&) = delete;
  NpyArray& operator=(const NpyArray&) = delete;
  ~NpyArray() = default;

  /// Element type.
  NpyType type() const noexcept { return type_; }
  /// Shape as in the header; empty for a 0-d array.
  const std::vector<std::int64_t>& shape() const noexcept { return shape_; }
  /// Number of rows: shape[0], or 1 for a 0-d array.
  std::int64_t rows() const noexcept { return rows_; }
  /// Bytes of one row: the product of shape[1:] times the element size
  /// (the element size for 0-d and 1-d arrays).
  std::size_t row_bytes() const noexcept { return row_bytes_; }
  /// Number of elements (the product of the shape; 1 for a 0-d array).
  std::int64_t element_count() const noexcept { return element_count_; }
  /// Bytes of all elements: rows() * row_bytes().
  std::size_t size_bytes() const noexcept { return size_bytes_; }
  /// All elements, C order. Not necessarily aligned (see the class comment).
  const std::byte* data() const noexcept { return data_; }
  /// Row i (0 <= i < rows()); throws Error(invalid_argument) otherwise.
  const std::byte* row(std::int64_t i) const;
  /// Copies rows [first, first + count) to dst (count * row_bytes() bytes);
  /// throws Error(invalid_argument) when the range is outside [0, rows()].
  void copy_rows(std::int64_t first, std::int64_t count, void* dst) const;
  /// Where the array came from, as used in messages ("x.npy", "a.npz[x]").
  const std::string& source() const noexcept { return source_; }

 private:
  NpyArray() = default;
  friend class NpzArchive;
  // Parses the .npy held in bytes[0, size) (which `owner` keeps alive).
  static NpyArray parse(std::shared_ptr<const void> owner, const std::byte* bytes, std::size_t size,
                        std::string source);

  std::shared_ptr<const void> owner_;  // keeps the mapping or buffer alive
  const std::byte* data_ = nullptr;
  NpyType type_ = NpyType::f32;
  std::vector<std::int64_t> shape_;
  std::int64_t rows_ = 0;
  std::size_t row_bytes_ = 0;
  std::int64_t element_count_ = 0;
  std::size_t size_bytes_ = 0;
  std::string source_;
};

/// A .npz archive as numpy writes it (np.savez, np.savez_compressed): a zip
/// of .npy members, stored or deflated, with the zip64 extensions numpy uses
/// (it forces zip64 extra fields on every member). The archive is mapped;
/// opening reads only the central directory and the local headers.
/// Movable, not copyable.
class NpzArchive {
 public:
  /// Opens a .npz. Throws Error(io) when the file cannot be opened or
  /// mapped, Error(invalid_argument) when it is not a well-formed zip, a
  /// member is not a ".npy", is encrypted, is compressed with a method other
  /// than stored or deflate, or two members share a name.
  static NpzArchive open(const std::filesystem::path& path);

  NpzArchive(NpzArchive&&) noexcept = default;
  NpzArchive& operator=(NpzArchive&&) noexcept = default;
  NpzArchive(const NpzArchive&) = delete;
  NpzArchive& operator=(const NpzArchive&) = delete;
  ~NpzArchive() = default;

  /// Member names without ".npy", in archive order (as np.load(...).files).
  std::vector<std::string> names() const;

  /// Whether a member `name` (with or without ".npy") exists.
  bool contains(const std::string& name) const;

  /// The member `name` (with or without ".npy"). A stored member is mapped,
  /// a deflated one inflated into memory and checked against its CRC-32.
  /// Throws Error(invalid_argument) naming the missing member and listing
  /// the present ones, or when the member is not a valid .npy (as
  /// NpyArray::open).
  NpyArray array(const std::string& name) const;

 private:
  struct Member {
    std::string name;          // without ".npy"
    std::uint16_t method = 0;  // 0 stored, 8 deflate
    std::uint32_t crc32 = 0;
    std::uint64_t compressed_size = 0;
    std::uint64_t uncompressed_size = 0;
    std::uint64_t data_offset = 0;  // of the member's bytes in the archive
  };
  NpzArchive() = default;

  std::shared_ptr<const void> mapping_;  // the mapped archive
  const std::byte* bytes_ = nullptr;
  std::string path_;
  std::vector<Member> members_;
};

/// Writes a .npy (version 1.0, little-endian, C order) row by row.
///
/// The data goes to a model::OutputFile: a temporary file in the
/// destination's directory that commit() renames over `path` (through
/// symbolic links, keeping an existing file's permission bits), so readers
/// never see a partial file and a failure leaves `path` as it was. Any error
/// (too many rows, a failed write, commit with too few rows) abandons the
/// writer: the temporary file is removed at once and later calls throw.
/// Destroying a writer that was not committed removes the temporary file
/// too. Movable, not copyable.
class NpyWriter {
 public:
  /// Starts writing an array of `type` and `shape` to `path`; shape[0] (1
  /// for a 0-d array) is the number of rows that must be appended before
  /// commit(). Throws Error(invalid_argument) for a negative or overflowing
  /// shape, Error(io) when the temporary file cannot be created.
  NpyWriter(const std::filesystem::path& path, NpyType type, std::vector<std::int64_t> shape);

  /// Appends `count` rows of row_bytes() each from `rows`. Throws
  /// Error(invalid_argument) when count is negative, rows is null with
  /// count > 0, or the total would exceed shape[0]; Error(io) when the write
  /// fails (e.g. the disk is full).
  void append(const void* rows, std::int64_t count);

  /// Flushes the file to disk and renames it into place. Throws
  /// Error(invalid_argument) when fewer than shape[0] rows were appended,
  /// Error(io) when flushing or renaming fails.
  void commit();

  /// Bytes of one row (product of shape[1:] times the element size).
  std::size_t row_bytes() const noexcept { return row_bytes_; }
  /// Rows appended so far.
  std::int64_t rows_written() const noexcept { return rows_written_; }
  /// Rows the shape asks for.
  std::int64_t rows_expected() const noexcept { return rows_expected_; }

 private:
  model::OutputFile file_;
  std::int64_t rows_expected_ = 0;
  std::int64_t rows_written_ = 0;
  std::size_t row_bytes_ = 0;
};

/// Writes a whole array to `path` in one go (an NpyWriter that appends all
/// rows and commits). `data` holds the elements in C order.
void save_npy(const std::filesystem::path& path, NpyType type, const std::vector<std::int64_t>& shape,
              const void* data);

}  // namespace bnorm::exec
