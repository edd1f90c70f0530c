#include "model/output_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <utility>

#include "bnorm/error.hpp"

namespace bnorm::model {
namespace fs = std::filesystem;

namespace {

std::string quoted(const fs::path& p) { return "'" + p.string() + "'"; }

// The temporaries being written, for a signal that ends the process before
// their destructors run (Ctrl-C, kill, a closed terminal). Fixed slots, so
// that the handler only reads memory and calls unlink (async-signal-safe).
// A slot is free, claimed (its path being copied) or published.
enum SlotState : int { kFree, kClaimed, kPublished };
struct TempSlot {
  std::atomic<int> state{kFree};
  char path[PATH_MAX];
};
TempSlot temp_slots[16];

extern "C" void remove_temporaries(int sig) {
  for (TempSlot& slot : temp_slots)
    if (slot.state.load() == kPublished) ::unlink(slot.path);
  std::signal(sig, SIG_DFL);  // then end as the signal would have
  std::raise(sig);
}

// Installs remove_temporaries, once, for the signals whose action is still
// the default: an application's own handlers are left alone.
void install_cleanup() {
  static const bool installed = [] {
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) {
      struct sigaction old {};
      if (::sigaction(sig, nullptr, &old) != 0 || old.sa_handler != SIG_DFL) continue;
      struct sigaction act {};
      act.sa_handler = remove_temporaries;
      sigemptyset(&act.sa_mask);
      ::sigaction(sig, &act, nullptr);
    }
    return true;
  }();
  (void)installed;
}

// The slot now holding `temp`, or -1 when none is free (a signal then
// leaves that temporary behind).
int register_temporary(const fs::path& temp) {
  const std::string& s = temp.native();
  if (s.size() >= PATH_MAX) return -1;
  install_cleanup();
  for (int i = 0; i < static_cast<int>(std::size(temp_slots)); ++i) {
    int expected = kFree;
    if (!temp_slots[i].state.compare_exchange_strong(expected, kClaimed)) continue;
    std::memcpy(temp_slots[i].path, s.c_str(), s.size() + 1);
    temp_slots[i].state.store(kPublished);
    return i;
  }
  return -1;
}

void release_temporary(int slot) noexcept {
  if (slot >= 0) temp_slots[slot].state.store(kFree);
}

// `path` with the links of its last component followed, as open() would
// follow them, also when the last one dangles. Renaming over `path` itself
// would replace the link instead of the file it names.
fs::path follow_links(const fs::path& path) {
  fs::path p = path;
  for (int hops = 0;; ++hops) {
    struct stat st;
    if (::lstat(p.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) break;
    // The kernel's own limit (MAXSYMLINKS); a loop ends here too.
    if (hops == 40) throw Error(ErrorKind::io, "cannot write " + quoted(path) + ": " + std::strerror(ELOOP));
    std::error_code ec;
    const fs::path link = fs::read_symlink(p, ec);
    if (ec)
      throw Error(ErrorKind::io, "cannot write " + quoted(path) + ": cannot read the link " + quoted(p) +
                                     ": " + ec.message());
    p = p.parent_path() / link;  // an absolute link replaces the whole path
  }
  if (p == path) return path;
  std::error_code ec;
  fs::path clean = fs::weakly_canonical(p, ec);
  return ec ? p : clean;
}

}  // namespace

OutputFile::OutputFile(const fs::path& path) : path_(path) {
  if (!path.has_filename())
    throw Error(ErrorKind::invalid_argument, path.string() + ": the output path names no file");
  destination_ = follow_links(path);

  struct stat st;
  bool replaces = false;
  if (::stat(destination_.c_str(), &st) == 0) {
    // Renaming over a device or FIFO would replace the node itself (a
    // root user's -o /dev/null would remove /dev/null).
    if (!S_ISREG(st.st_mode))
      throw Error(ErrorKind::io,
                  "cannot write " + describe() + ": " +
                      (S_ISDIR(st.st_mode) ? "it is a directory" : "it is not a regular file"));
    replaces = true;
  } else if (const int err = errno; err != ENOENT) {
    throw Error(ErrorKind::io, "cannot write " + describe() + ": " + std::strerror(err));
  }

  const fs::path dir = destination_.has_parent_path() ? destination_.parent_path() : fs::path(".");
  std::random_device rd;
  std::mt19937_64 rng((std::uint64_t{rd()} << 32) ^ rd() ^ static_cast<std::uint64_t>(::getpid()));
  for (int attempt = 0; fd_ < 0; ++attempt) {
    char suffix[17];
    std::snprintf(suffix, sizeof suffix, "%016llx", static_cast<unsigned long long>(rng()));
    // Built with appends: GCC 12 flags "const char* + std::string" with a
    // false -Wrestrict (GCC bug 105329).
    std::string name(1, '.');
    name += destination_.filename().string();
    name += ".tmp-";
    name += suffix;
    temp_ = dir / name;
    // O_EXCL: never truncate a file that is not ours. 0666 & ~umask gives a
    // new output the permissions of any file the user creates (mkstemp's
    // 0600 would make it private).
    fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    const int err = errno;
    if (fd_ < 0 && (err != EEXIST || attempt == 16))
      throw Error(ErrorKind::io, "cannot write " + describe() + ": cannot create a temporary file in " +
                                     quoted(dir) + ": " + std::strerror(err));
  }
  state_ = State::open;
  slot_ = register_temporary(temp_);
  // The replacement keeps the permissions of the file it replaces, set
  // before any data is written so that a private file's contents are never
  // readable by others through the temporary.
  if (replaces && ::fchmod(fd_, st.st_mode & 0777) != 0) fail(errno);
}

OutputFile::OutputFile(OutputFile&& other) noexcept
    : path_(std::move(other.path_)),
      destination_(std::move(other.destination_)),
      temp_(std::move(other.temp_)),
      fd_(std::exchange(other.fd_, -1)),
      state_(std::exchange(other.state_, State::abandoned)),
      slot_(std::exchange(other.slot_, -1)) {}

OutputFile& OutputFile::operator=(OutputFile&& other) noexcept {
  if (this != &other) {
    abandon();
    path_ = std::move(other.path_);
    destination_ = std::move(other.destination_);
    temp_ = std::move(other.temp_);
    fd_ = std::exchange(other.fd_, -1);
    state_ = std::exchange(other.state_, State::abandoned);
    slot_ = std::exchange(other.slot_, -1);
  }
  return *this;
}

OutputFile::~OutputFile() { abandon(); }

std::string OutputFile::describe() const {
  if (destination_.empty() || destination_ == path_) return quoted(path_);
  return quoted(path_) + " (a link to " + quoted(destination_) + ")";
}

void OutputFile::abandon() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (state_ == State::open) ::unlink(temp_.c_str());
  if (state_ != State::committed) state_ = State::abandoned;
  release_temporary(std::exchange(slot_, -1));
}

void OutputFile::fail(int err) {
  abandon();
  throw Error(ErrorKind::io, "cannot write " + describe() + ": " + std::strerror(err));
}

void OutputFile::write(const void* data, std::size_t size) {
  if (state_ != State::open)
    throw Error(ErrorKind::invalid_argument,
                "cannot write " + describe() + ": the file was " + (committed() ? "committed" : "abandoned"));
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t w = ::write(fd_, p, std::min<std::size_t>(size, std::size_t{1} << 30));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) fail(errno);
    if (w == 0) fail(EIO);
    p += w;
    size -= static_cast<std::size_t>(w);
  }
}

void OutputFile::commit() {
  if (state_ != State::open)
    throw Error(ErrorKind::invalid_argument,
                "cannot write " + describe() + ": the file was " + (committed() ? "committed" : "abandoned"));
  // fsync before the rename, so that a crash cannot leave a complete-looking
  // name over incomplete data.
  if (::fsync(fd_) != 0) fail(errno);
  if (::close(std::exchange(fd_, -1)) != 0) fail(errno);
  if (::rename(temp_.c_str(), destination_.c_str()) != 0) {
    const int err = errno;
    abandon();
    throw Error(ErrorKind::io,
                "cannot move the written file into place at " + describe() + ": " + std::strerror(err));
  }
  state_ = State::committed;
  release_temporary(std::exchange(slot_, -1));
  // The new name is durable once its directory is: without this fsync a
  // crash soon after could bring back the old file (or none).
  const fs::path dir = destination_.has_parent_path() ? destination_.parent_path() : fs::path(".");
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int err = dfd < 0 ? errno : 0;
  if (dfd >= 0) {
    // EINVAL: a file system that cannot sync directories (nothing to do).
    if (::fsync(dfd) != 0 && errno != EINVAL) err = errno;
    ::close(dfd);
  }
  if (err != 0)
    throw Error(ErrorKind::io, "wrote " + describe() + ", but cannot make the new name durable (fsync of " +
                                   quoted(dir) + "): " + std::strerror(err));
}

}  // namespace bnorm::model
