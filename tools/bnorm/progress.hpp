// A progress bar on stderr, drawn only when stderr is a terminal (so logs
// and pipes stay clean).
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

namespace bnorm::cli {

class Progress {
 public:
  explicit Progress(std::string label) : label_(std::move(label)), on_(::isatty(2) != 0) {}
  ~Progress() { done(); }

  /// Shows `done` of `total` rows.
  void update(std::int64_t done, std::int64_t total) {
    if (!on_ || total <= 0) return;
    const int width = 30, filled = static_cast<int>(width * done / total);
    std::fprintf(stderr, "\r%s [%s%s] %3d%% %lld/%lld rows", label_.c_str(), std::string(static_cast<std::size_t>(filled), '#').c_str(),
                 std::string(static_cast<std::size_t>(width - filled), ' ').c_str(), static_cast<int>(100 * done / total),
                 static_cast<long long>(done), static_cast<long long>(total));
    std::fflush(stderr);
    drawn_ = true;
  }
  /// Ends the line (once).
  void done() {
    if (drawn_) std::fputc('\n', stderr);
    drawn_ = false;
  }

 private:
  std::string label_;
  bool on_;
  bool drawn_ = false;
};

}  // namespace bnorm::cli
