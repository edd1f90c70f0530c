// Reading the (gzip-compressed) IDX files of MNIST and Fashion-MNIST.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mnist_bn {

/// Images as float rows scaled to [0, 1] and their labels.
struct Dataset {
  std::int64_t count = 0;
  std::int64_t pixels = 0;           ///< rows * cols (784)
  std::vector<float> images;         ///< count x pixels, pixel / 255
  std::vector<std::uint8_t> labels;  ///< count values in [0, 9]
};

/// Reads an IDX file (gzip'd or plain: zlib reads both) into its dims and
/// bytes; `want_dims` is 3 for images, 1 for labels. Throws
/// std::runtime_error naming the file for a missing file, a bad magic
/// number, an element type other than unsigned byte, or a short file.
std::vector<std::uint8_t> read_idx(const std::string& path, int want_dims, std::vector<std::int64_t>& dims);

/// Loads `<dir>/<prefix>-images-idx3-ubyte.gz` and
/// `<dir>/<prefix>-labels-idx1-ubyte.gz` (prefix "train" or "t10k").
Dataset load_dataset(const std::string& dir, const std::string& prefix);

}  // namespace mnist_bn
