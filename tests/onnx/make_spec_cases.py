"""Writes ONNX RMSNormalization-23 and GroupNormalization-21 test cases in the
backend node-test layout (OUT_DIR/node/<name>/model.onnx and
test_data_set_0/{input,output}_i.pb).

Usage: make_spec_cases.py OUT_DIR

Debian's python3-onnx (1.12) predates both operators, so these cases are
written here from the operators' specifications, computed with numpy in
float64 and stored as float32:
- RMSNormalization-23: for each row over the dims [axis, rank) (negative axis
  counts from the end, default -1),
      Y = X / sqrt(mean(X^2) + epsilon) * scale,   epsilon default 1e-5.
  The names and shapes follow the LayerNormalization cases of the ONNX test
  suite (2-d, 3-d with epsilon, 4-d, default axis).
- GroupNormalization-21: the C channels of X (N, C, D1, ...) form num_groups
  groups of consecutive channels; for each sample and group
      Y = (X - mean) / sqrt(var + epsilon) * scale[c] + bias[c],
  biased variance, scale and bias of C values (opset 18 had one per group),
  epsilon default 1e-5.
The models are built with onnx.helper but not checked (the checker of onnx
1.12 does not know these opsets).
"""
import os
import sys
import zlib

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def rms_norm(x, scale, axis, epsilon):
    axis = axis + x.ndim if axis < 0 else axis
    x64 = x.astype(np.float64)
    mean_sq = np.mean(x64 * x64, axis=tuple(range(axis, x.ndim)), keepdims=True)
    return (x64 / np.sqrt(mean_sq + epsilon) * scale.astype(np.float64)).astype(np.float32)


def save(out_dir, name, node, inputs, names, y, opset):
    graph = helper.make_graph(
        [node], name,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, t.shape) for n, t in zip(names, inputs)],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, y.shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    case = os.path.join(out_dir, "node", name)
    data = os.path.join(case, "test_data_set_0")
    os.makedirs(data, exist_ok=True)
    with open(os.path.join(case, "model.onnx"), "wb") as f:
        f.write(model.SerializeToString())
    for i, t in enumerate(inputs):
        with open(os.path.join(data, f"input_{i}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(t).SerializeToString())
    with open(os.path.join(data, "output_0.pb"), "wb") as f:
        f.write(numpy_helper.from_array(y).SerializeToString())


def group_norm(x, scale, bias, num_groups, epsilon):
    n, c = x.shape[:2]
    g = x.astype(np.float64).reshape(n, num_groups, -1)
    mean = g.mean(axis=2, keepdims=True)
    var = g.var(axis=2, keepdims=True)
    xhat = ((g - mean) / np.sqrt(var + epsilon)).reshape(x.shape)
    per_channel = (1, c) + (1,) * (x.ndim - 2)
    return (xhat * scale.astype(np.float64).reshape(per_channel)
            + bias.astype(np.float64).reshape(per_channel)).astype(np.float32)


def write_group_case(out_dir, name, x, num_groups, epsilon):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    scale = rng.standard_normal(x.shape[1]).astype(np.float32)
    bias = rng.standard_normal(x.shape[1]).astype(np.float32)
    eps = float(np.float32(1e-5 if epsilon is None else epsilon))
    y = group_norm(x, scale, bias, num_groups, eps)
    attrs = {"num_groups": num_groups}
    if epsilon is not None:
        attrs["epsilon"] = epsilon
    node = helper.make_node("GroupNormalization", ["X", "scale", "bias"], ["Y"], **attrs)
    save(out_dir, name, node, [x, scale, bias], ["X", "scale", "bias"], y, 21)


def write_case(out_dir, name, x, axis, epsilon):
    axis_pos = axis + x.ndim if axis is not None and axis < 0 else (axis if axis is not None else x.ndim - 1)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    scale = rng.standard_normal(x.shape[axis_pos:]).astype(np.float32)
    # The attribute is a float32: compute with the value the model holds.
    eps = float(np.float32(1e-5 if epsilon is None else epsilon))
    y = rms_norm(x, scale, -1 if axis is None else axis, eps)
    attrs = {}
    if axis is not None:
        attrs["axis"] = axis
    if epsilon is not None:
        attrs["epsilon"] = epsilon
    node = helper.make_node("RMSNormalization", ["X", "W"], ["Y"], **attrs)
    save(out_dir, name, node, [x, scale], ["X", "W"], y, 23)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir = sys.argv[1]
    rng = np.random.default_rng(0)
    count = 0
    x2 = rng.standard_normal((3, 4)).astype(np.float32)
    for axis in range(2):
        write_case(out_dir, f"test_rms_normalization_2d_axis{axis}", x2, axis, None)
        write_case(out_dir, f"test_rms_normalization_2d_axis_negative_{2 - axis}", x2, axis - 2, None)
        count += 2
    x3 = rng.standard_normal((2, 3, 5)).astype(np.float32)
    for axis in range(3):
        write_case(out_dir, f"test_rms_normalization_3d_axis{axis}_epsilon", x3, axis, 1e-1)
        write_case(out_dir, f"test_rms_normalization_3d_axis_negative_{3 - axis}_epsilon", x3, axis - 3, 1e-1)
        count += 2
    x4 = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    for axis in range(4):
        write_case(out_dir, f"test_rms_normalization_4d_axis{axis}", x4, axis, None)
        write_case(out_dir, f"test_rms_normalization_4d_axis_negative_{4 - axis}", x4, axis - 4, None)
        count += 2
    write_case(out_dir, "test_rms_normalization_default_axis", x4, None, None)
    # Data far from zero: the mean square is dominated by the offset.
    write_case(out_dir, "test_rms_normalization_offset_data",
               (1e4 + 0.1 * rng.standard_normal((4, 64))).astype(np.float32), -1, None)
    count += 2
    # GroupNormalization-21: the ONNX suite's example shape, an epsilon case,
    # ranks 2, 3 and 5, one group (layer-norm-like), one channel per group
    # (instance-norm-like) and data far from zero.
    write_group_case(out_dir, "test_group_normalization_example",
                     rng.standard_normal((3, 4, 2, 2)).astype(np.float32), 2, None)
    write_group_case(out_dir, "test_group_normalization_epsilon",
                     rng.standard_normal((3, 4, 2, 2)).astype(np.float32), 2, 1e-2)
    write_group_case(out_dir, "test_group_normalization_2d", rng.standard_normal((5, 6)).astype(np.float32), 3, None)
    write_group_case(out_dir, "test_group_normalization_3d",
                     rng.standard_normal((2, 12, 7)).astype(np.float32), 4, None)
    write_group_case(out_dir, "test_group_normalization_5d",
                     rng.standard_normal((2, 6, 3, 2, 5)).astype(np.float32), 3, None)
    write_group_case(out_dir, "test_group_normalization_one_group",
                     rng.standard_normal((2, 6, 4, 4)).astype(np.float32), 1, None)
    write_group_case(out_dir, "test_group_normalization_group_per_channel",
                     rng.standard_normal((2, 6, 4, 4)).astype(np.float32), 6, None)
    write_group_case(out_dir, "test_group_normalization_offset_data",
                     (1e4 + 0.1 * rng.standard_normal((2, 8, 5, 5))).astype(np.float32), 4, None)
    count += 8
    print(f"wrote {count} RMSNormalization and GroupNormalization cases to {os.path.join(out_dir, 'node')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
