// The one way bnorm writes a user's output file (a model, a .npy): into a
// temporary file beside the destination, renamed over it only once complete,
// so that readers never see a partial file and a failure leaves the
// destination as it was.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>

namespace bnorm::model {

/// A file being written in place of `path`.
///
/// The destination is `path` with any chain of symbolic links in its last
/// component followed: writing to a link replaces the file it points to and
/// keeps the link (as cp and editors do). A dangling link is written through
/// too, creating the file it names, when that file's directory exists.
/// The temporary file is created (O_EXCL, random name) in the destination's
/// directory, so that the rename stays within one file system. A new file
/// gets 0666 & ~umask; a file that replaces an existing one gets that file's
/// permission bits (rwx for user, group, others; not its owner or group,
/// which only root could give it, nor setuid, setgid or sticky bits).
///
/// commit() makes the data durable (fsync), renames it into place and syncs
/// the directory; abandon() and the destructor of an uncommitted file remove
/// the temporary. So does SIGINT, SIGTERM, SIGHUP or SIGQUIT while it is
/// open, when the process left that signal's action at its default: the
/// first OutputFile installs a handler that removes the open temporaries,
/// then ends the process as the signal would have.
/// Errors are Error(io) naming `path` and the reason; any failure up to the
/// rename abandons the file. Movable, not copyable.
class OutputFile {
 public:
  /// Resolves the destination and creates the temporary file. Throws
  /// Error(invalid_argument) when `path` names no file, Error(io) when the
  /// destination is not a regular file, a link cannot be followed, or the
  /// temporary file cannot be created.
  explicit OutputFile(const std::filesystem::path& path);
  /// A file that is not open, as a moved-from one: to be assigned later.
  OutputFile() = default;
  OutputFile(OutputFile&& other) noexcept;
  OutputFile& operator=(OutputFile&& other) noexcept;
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;
  /// Removes the temporary file unless commit() succeeded.
  ~OutputFile();

  /// The path as given, for messages.
  const std::filesystem::path& path() const noexcept { return path_; }
  /// The file commit() replaces: path() with its links followed.
  const std::filesystem::path& destination() const noexcept { return destination_; }
  /// The temporary file's descriptor, for writers of their own (e.g. a
  /// protobuf stream); -1 unless open.
  int fd() const noexcept { return fd_; }
  /// Whether data can still be written and committed.
  bool is_open() const noexcept { return state_ == State::open; }
  /// Whether commit() succeeded.
  bool committed() const noexcept { return state_ == State::committed; }

  /// Writes all of [data, data + size). Throws Error(io) (and abandons) when
  /// the write fails, e.g. the disk is full.
  void write(const void* data, std::size_t size);

  /// fsync, close, rename over destination(), and fsync its directory (so
  /// that the rename survives a crash). Throws Error(io) (and abandons) when
  /// one of the first three fails; the destination is then unchanged. When
  /// only the directory's fsync fails, the new file is in place (committed())
  /// and the Error says so.
  void commit();

  /// Closes and removes the temporary file; later write() and commit()
  /// throw. Does nothing after commit().
  void abandon() noexcept;

  /// "'path'", or "'path' (a link to 'destination')": how messages name
  /// the output.
  std::string describe() const;

 private:
  enum class State { open, committed, abandoned };

  [[noreturn]] void fail(int err);

  std::filesystem::path path_;
  std::filesystem::path destination_;
  std::filesystem::path temp_;
  int fd_ = -1;
  State state_ = State::abandoned;
  int slot_ = -1;  // in the signal handler's list of temporaries
};

}  // namespace bnorm::model
