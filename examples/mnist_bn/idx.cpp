#include "idx.hpp"

#include <zlib.h>

#include <memory>
#include <stdexcept>

namespace mnist_bn {
namespace {

struct GzClose {
  void operator()(gzFile f) const noexcept { gzclose(f); }
};

void read_exact(gzFile f, void* dst, std::size_t bytes, const std::string& path) {
  auto* p = static_cast<unsigned char*>(dst);
  while (bytes > 0) {
    const unsigned chunk = bytes > (1u << 30) ? (1u << 30) : static_cast<unsigned>(bytes);
    const int got = gzread(f, p, chunk);
    if (got <= 0) throw std::runtime_error(path + ": file is shorter than its IDX header says");
    p += got;
    bytes -= static_cast<std::size_t>(got);
  }
}

}  // namespace

std::vector<std::uint8_t> read_idx(const std::string& path, int want_dims, std::vector<std::int64_t>& dims) {
  std::unique_ptr<gzFile_s, GzClose> f(gzopen(path.c_str(), "rb"));
  if (!f) throw std::runtime_error(path + ": cannot open (is dataset-fashion-mnist installed?)");
  unsigned char magic[4];
  read_exact(f.get(), magic, 4, path);
  // IDX: two zero bytes, the element type (0x08 = unsigned byte), the rank.
  if (magic[0] != 0 || magic[1] != 0 || magic[2] != 0x08 || magic[3] != want_dims)
    throw std::runtime_error(path + ": not an IDX file of unsigned bytes with " + std::to_string(want_dims) +
                             " dims");
  dims.assign(static_cast<std::size_t>(want_dims), 0);
  std::int64_t total = 1;
  for (auto& d : dims) {
    unsigned char be[4];
    read_exact(f.get(), be, 4, path);
    d = (std::int64_t{be[0]} << 24) | (std::int64_t{be[1]} << 16) | (std::int64_t{be[2]} << 8) | be[3];
    total *= d;
  }
  std::vector<std::uint8_t> data(static_cast<std::size_t>(total));
  read_exact(f.get(), data.data(), data.size(), path);
  return data;
}

Dataset load_dataset(const std::string& dir, const std::string& prefix) {
  std::vector<std::int64_t> image_dims, label_dims;
  const auto pixels = read_idx(dir + "/" + prefix + "-images-idx3-ubyte.gz", 3, image_dims);
  const auto labels = read_idx(dir + "/" + prefix + "-labels-idx1-ubyte.gz", 1, label_dims);
  if (image_dims[0] != label_dims[0])
    throw std::runtime_error(dir + "/" + prefix + ": " + std::to_string(image_dims[0]) + " images but " +
                             std::to_string(label_dims[0]) + " labels");
  Dataset d;
  d.count = image_dims[0];
  d.pixels = image_dims[1] * image_dims[2];
  d.images.resize(pixels.size());
  for (std::size_t i = 0; i < pixels.size(); ++i) d.images[i] = static_cast<float>(pixels[i]) / 255.0f;
  d.labels = labels;
  for (auto l : d.labels)
    if (l > 9)
      throw std::runtime_error(dir + "/" + prefix + ": label " + std::to_string(l) + " is not in 0..9");
  return d;
}

}  // namespace mnist_bn
