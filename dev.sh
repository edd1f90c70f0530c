#!/usr/bin/env bash
# bnorm's two quickstart commands (README.md), for a fresh Debian 12 machine:
#   ./dev.sh run    install missing packages, build (Release), run the main job
#                   (bnorm prepare on the bundled Fashion-MNIST example)
#   ./dev.sh test   install missing packages, build, run the whole test suite
# Packages come from Debian's archive only (DESIGN.md section 5).
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(
  cmake g++ ninja-build libgtest-dev
  libhwy-dev libcli11-dev nlohmann-json3-dev
  clang libclang-rt-14-dev
  libdnnl-dev libtorch-dev
  libonnx-dev libprotobuf-dev protobuf-compiler zlib1g-dev
  libopenmpi-dev openmpi-bin dataset-fashion-mnist
  python3-onnx python3-torch python3-numpy
)
BUILD_DIR=${BNORM_BUILD_DIR:-build}

install_missing_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  echo "dev.sh: installing ${missing[*]}" >&2
  local sudo=()
  [[ $(id -u) -ne 0 ]] && sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}"
}

build() {
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release
  cmake --build "$BUILD_DIR"
}

case "${1:-}" in
  run)
    install_missing_packages
    build
    # The deployment pipeline on the bundled example: a Fashion-MNIST CNN
    # whose BN statistics are stale on shifted data (examples/fashion_mnist).
    "$BUILD_DIR/tools/bnorm/bnorm" prepare examples/fashion_mnist/model.onnx \
      --calib examples/fashion_mnist/calib.npy --eval examples/fashion_mnist/eval.npz \
      -o "$BUILD_DIR/fashion_mnist_prepared.onnx"
    ;;
  test)
    install_missing_packages
    build
    ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$(nproc)"
    ;;
  *)
    echo "usage: $0 run|test" >&2
    exit 2
    ;;
esac
