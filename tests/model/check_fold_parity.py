"""Folds the exported test models with the bnorm CLI and checks that the
folded models compute what the originals do.

Usage: check_fold_parity.py BNORM MODEL_DIR WORK_DIR

The oracle is a small ONNX interpreter written here over PyTorch's
functional ops (Debian has no ONNX runtime), independent of bnorm's code.
Each model runs on its saved example input; the folded output must match
within the precision of its float type, and each model must fold (and
leave) exactly the BatchNormalization nodes EXPECTED says. Run with /usr/bin/python3.
"""
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper


def attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def pads_2k(p, k):
    return list(p[:k]) if p else [0] * k


def run(model, x):
    env = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()).double() for t in model.graph.initializer}
    env[model.graph.input[0].name] = torch.from_numpy(x).double()
    for n in model.graph.node:
        a = attrs(n)
        i = [env[name] if name else None for name in n.input]
        op = n.op_type
        if op == "Conv" or op == "ConvTranspose":
            k = i[1].dim() - 2
            pads = a.get("pads", [0] * (2 * k))
            if any(pads[d] != pads[d + k] for d in range(k)):
                raise ValueError("asymmetric pads")
            common = dict(stride=a.get("strides", [1] * k), padding=pads[:k], dilation=a.get("dilations", [1] * k),
                          groups=a.get("group", 1))
            fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[k] if op == "Conv" else \
                {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[k]
            if op == "ConvTranspose":
                common["output_padding"] = a.get("output_padding", [0] * k)
            y = fn(i[0], i[1], i[2] if len(i) > 2 else None, **common)
        elif op == "BatchNormalization":
            y = F.batch_norm(i[0], i[3], i[4], i[1], i[2], False, 0.0, a.get("epsilon", 1e-5))
        elif op == "Gemm":
            A = i[0].t() if a.get("transA", 0) else i[0]
            B = i[1].t() if a.get("transB", 0) else i[1]
            y = a.get("alpha", 1.0) * A @ B
            if len(i) > 2 and i[2] is not None:
                y = y + a.get("beta", 1.0) * i[2]
        elif op == "MatMul":
            y = i[0] @ i[1]
        elif op == "Relu":
            y = torch.relu(i[0])
        elif op == "Add":
            y = i[0] + i[1]
        elif op == "Mul":
            y = i[0] * i[1]
        elif op == "Transpose":
            y = i[0].permute(*a["perm"]) if "perm" in a else i[0].permute(*reversed(range(i[0].dim())))
        elif op == "Identity":
            y = i[0]
        elif op == "Flatten":
            y = i[0].flatten(a.get("axis", 1))
        elif op == "Constant":
            y = torch.from_numpy(numpy_helper.to_array(a["value"]).copy()).double()
        else:
            raise ValueError("op " + op + " not in this test interpreter")
        env[n.output[0]] = y
    return env[model.graph.output[0].name].numpy()


def tolerance(model):
    t = model.graph.initializer[0].data_type if model.graph.initializer else onnx.TensorProto.FLOAT
    # Folded weights are rounded once to the model's type; the interpreter
    # computes in double either way.
    return {onnx.TensorProto.FLOAT16: 2e-2, onnx.TensorProto.DOUBLE: 1e-10}.get(t, 2e-5)


# BatchNormalization nodes each model must fold, and must leave (the
# unfoldable model: BN on the graph input, after a Relu, and after a Conv
# whose output has another consumer).
EXPECTED = {"resnet_block": (4, 0), "conv_transpose": (2, 0), "linear": (3, 0), "conv3d": (1, 0),
            "conv1d": (1, 0), "unfoldable": (0, 3)}


def main():
    bnorm, model_dir, work = sys.argv[1:4]
    os.makedirs(work, exist_ok=True)
    failures = 0
    names = sorted(f for f in os.listdir(model_dir) if f.endswith(".onnx"))
    if not names:
        print("no models in", model_dir)
        return 1
    for name in names:
        src = os.path.join(model_dir, name)
        dst = os.path.join(work, name)
        for flags in ([], ["--scale-shift"]):
            out = subprocess.run([bnorm, "fold", src, "-o", dst, "--json"] + flags, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"FAIL {name} {flags}: bnorm fold exited {out.returncode}: {out.stderr.strip()}")
                failures += 1
                continue
            report = json.loads(out.stdout)
            base = name.split("_f16")[0].split("_f64")[0]
            x = np.load(os.path.join(model_dir, base.replace(".onnx", "") + "_input.npy"))
            original, folded = onnx.load(src), onnx.load(dst)
            want, got = run(original, x), run(folded, x)
            err = float(np.max(np.abs(want - got)) / max(1.0, float(np.max(np.abs(want)))))
            bn_left = sum(1 for n in folded.graph.node if n.op_type == "BatchNormalization")
            summary = report["summary"]
            folded_want, left_want = EXPECTED[base.replace(".onnx", "")]
            counts = (summary["folded"], summary["scale_shift"], summary["left"])
            counts_want = (folded_want, left_want, 0) if flags else (folded_want, 0, left_want)
            ok = err <= tolerance(original) and bn_left == summary["left"] and counts == counts_want
            print(f"{'ok  ' if ok else 'FAIL'} {name} {' '.join(flags) or '(fold)'}: folded {summary['folded']}, "
                  f"Mul+Add {summary['scale_shift']}, left {summary['left']}; max rel err {err:.2e}")
            for item in report["batch_norms"]:
                print(f"       {item['batch_norm']}: {item['action']} {item['target'] or item['reason']}")
            failures += not ok
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
