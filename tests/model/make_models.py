"""Exports the PyTorch models the model-toolkit tests use.

Usage: make_models.py OUT_DIR

Run with /usr/bin/python3 (Debian's python3-torch and python3-onnx). Models
are exported in eval mode with training=TrainingMode.PRESERVE and
do_constant_folding=False, so that BatchNormalization survives export
(otherwise the exporter folds it itself). Running statistics and affine
parameters are randomized so that folding is visible in the numbers.
"""
import os
import sys

import numpy as np
import onnx
import torch
import torch.nn as nn
from onnx import numpy_helper

torch.manual_seed(0)


def randomize(model):
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            if m.affine:
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-1, 1)
    return model.eval()


class ResNetBlock(nn.Module):
    """Conv-BN-ReLU, a depthwise Conv-BN, a downsampling 1x1 Conv-BN shortcut."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.bn3 = nn.BatchNorm2d(16)
        self.down = nn.Conv2d(3, 16, 1, stride=2, bias=False)
        self.bn_down = nn.BatchNorm2d(16)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.dw(y)))
        y = self.bn3(self.pw(y))
        return torch.relu(y + self.bn_down(self.down(x)))


class ConvTransposeNet(nn.Module):
    """Grouped ConvTranspose with output_padding, with and without bias."""

    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(8, 12, 3, stride=2, padding=1, output_padding=1, groups=4)
        self.bn = nn.BatchNorm2d(12)
        self.up2 = nn.ConvTranspose2d(12, 6, 2, stride=2, bias=False, groups=3, dilation=1)
        self.bn2 = nn.BatchNorm2d(6)

    def forward(self, x):
        return self.bn2(self.up2(torch.relu(self.bn(self.up(x)))))


class LinearNet(nn.Module):
    """Linear (Gemm) with and without bias, and a matmul with a transposed
    constant (MatMul after Transpose), each followed by BatchNorm1d."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.bn1 = nn.BatchNorm1d(32)
        self.fc2 = nn.Linear(32, 10, bias=False)
        self.bn2 = nn.BatchNorm1d(10)
        self.w3 = nn.Parameter(torch.randn(6, 10))
        self.bn3 = nn.BatchNorm1d(6)

    def forward(self, x):
        y = self.bn2(self.fc2(torch.relu(self.bn1(self.fc1(x)))))
        return self.bn3(torch.matmul(y, self.w3.t()))


class Conv3dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, padding=(1, 0, 1), dilation=(1, 2, 1))
        self.bn = nn.BatchNorm3d(4)
        self.conv1d = None

    def forward(self, x):
        return self.bn(self.conv(x))


class Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 6, 5, stride=2, bias=False)
        self.bn = nn.BatchNorm1d(6)

    def forward(self, x):
        return self.bn(self.conv(x))


class Unfoldable(nn.Module):
    """BN after ReLU (no foldable producer), a Conv whose output also feeds
    another branch, and BN on the graph input."""

    def __init__(self):
        super().__init__()
        self.bn_in = nn.BatchNorm2d(3)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn_after_relu = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.bn_shared = nn.BatchNorm2d(4)

    def forward(self, x):
        y = torch.relu(self.conv(self.bn_in(x)))
        y = self.bn_after_relu(y)
        z = self.conv2(y)
        return self.bn_shared(z) + z


class Bottleneck(nn.Module):
    def __init__(self, cin, width, stride):
        super().__init__()
        cout = width * 4
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + (self.down(x) if self.down is not None else x))


class ResNet50(nn.Module):
    """The ResNet-50 architecture (25.6 M parameters, 53 BatchNorm2d), written
    here because Debian's torch has no torchvision models."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], 64
        for width, count, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(count):
                blocks.append(Bottleneck(cin, width, stride if i == 0 else 1))
                cin = width * 4
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(2048, 1000)

    def forward(self, x):
        y = self.blocks(self.stem(x))
        return self.fc(torch.flatten(torch.mean(y, dim=(2, 3)), 1))


def export(model, example, path):
    torch.onnx.export(randomize(model), example, path, training=torch.onnx.TrainingMode.PRESERVE,
                      do_constant_folding=False, opset_version=13, input_names=["x"], output_names=["y"])
    np.save(path.replace(".onnx", "_input.npy"), example.numpy())


def with_float_type(src, dst, np_type, onnx_type):
    """A copy of an exported model with every float tensor in another type."""
    m = onnx.load(src)
    for t in m.graph.initializer:
        if t.data_type == onnx.TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np_type), t.name))
    for v in list(m.graph.input) + list(m.graph.output) + list(m.graph.value_info):
        if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            v.type.tensor_type.elem_type = onnx_type
    onnx.save(m, dst)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    export(ResNetBlock(), torch.randn(2, 3, 16, 16), os.path.join(out, "resnet_block.onnx"))
    export(ConvTransposeNet(), torch.randn(2, 8, 5, 5), os.path.join(out, "conv_transpose.onnx"))
    export(LinearNet(), torch.randn(4, 16), os.path.join(out, "linear.onnx"))
    export(Conv3dNet(), torch.randn(2, 3, 5, 8, 6), os.path.join(out, "conv3d.onnx"))
    export(Conv1dNet(), torch.randn(3, 4, 20), os.path.join(out, "conv1d.onnx"))
    export(Unfoldable(), torch.randn(2, 3, 8, 8), os.path.join(out, "unfoldable.onnx"))
    block = os.path.join(out, "resnet_block.onnx")
    with_float_type(block, os.path.join(out, "resnet_block_f16.onnx"), np.float16, onnx.TensorProto.FLOAT16)
    with_float_type(block, os.path.join(out, "resnet_block_f64.onnx"), np.float64, onnx.TensorProto.DOUBLE)
    # The size test's model, apart: the parity check runs every model in OUT_DIR.
    os.makedirs(os.path.join(out, "large"), exist_ok=True)
    export(ResNet50(), torch.randn(1, 3, 224, 224), os.path.join(out, "large", "resnet50.onnx"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
