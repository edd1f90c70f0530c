#!/usr/bin/env bash
# The executor's speed runs recorded in docs/PERFORMANCE.md: the bundled
# example (original vs prepared: recalibrated and folded) at batch 64, and a
# ResNet-18-shaped model (random weights, original vs folded) at 224x224,
# batch 8. Usage: bench/exec_speed.sh BUILD_DIR > exec_run.txt
source "$(dirname "$0")/script_setup.sh"
bnorm=$build/tools/bnorm/bnorm
"$bnorm" prepare examples/fashion_mnist/model.onnx --calib examples/fashion_mnist/calib.npy \
  -o "$work/fashion_mnist_prepared.onnx" > /dev/null
/usr/bin/python3 bench/models/make_resnet18.py "$work/resnet18.onnx" 2> /dev/null
"$bnorm" fold "$work/resnet18.onnx" -o "$work/resnet18_folded.onnx" > /dev/null
cp examples/fashion_mnist/model.onnx "$work/fashion_mnist.onnx"
cd "$work"
echo "\$ bnorm-exec-bench fashion_mnist.onnx fashion_mnist_prepared.onnx --batch 64 --reps 41"
"$build/bench/bnorm-exec-bench" fashion_mnist.onnx fashion_mnist_prepared.onnx --batch 64 --reps 41
echo "\$ bnorm-exec-bench resnet18.onnx resnet18_folded.onnx --batch 8 --reps 11"
"$build/bench/bnorm-exec-bench" resnet18.onnx resnet18_folded.onnx --batch 8 --reps 11
