"""bnorm run / calibrate / verify against PyTorch, and their handling of bad
data.

Usage: check_exec_torch.py BNORM WORK_DIR

- run: models exported from PyTorch (eval mode, BatchNormalization kept)
  give PyTorch's outputs (float32, relative error <= 1e-4);
- calibrate: with --batch-size equal to the set size the statistics equal
  torch.optim.swa_utils.update_bn on one batch; with smaller batches they
  equal the exact mean and unbiased variance of each BN's input over the set
  (captured with hooks while PyTorch runs the same batches in train mode);
- verify: passes on a folded model, fails (exit 1) on a perturbed one;
- bad data files give a clear error and leave no output file.

Run with /usr/bin/python3 (python3-torch, python3-onnx, python3-numpy).
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import helper, numpy_helper

torch.manual_seed(0)
np.random.seed(0)
BNORM = ""
failures = 0


def check(ok, what, detail=""):
    global failures
    print(("ok   " if ok else "FAIL ") + what + ("" if ok or not detail else "\n     " + str(detail)))
    failures += not ok


def bnorm(*args):
    return subprocess.run([BNORM, *map(str, args)], capture_output=True, text=True)


def randomize(model):
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-1, 1)
    return model.eval()


def export(model, x, path):
    torch.onnx.export(model, x, path, training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
                      opset_version=13, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})


class Zoo(nn.Module):
    """Most of the executor's ops as PyTorch exports them."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2, groups=4, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.up = nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.fc = nn.Linear(12 * 5 * 5, 10)
        self.bn1d = nn.BatchNorm1d(10)
        self.w = nn.Parameter(torch.randn(10, 6))
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        y = F.relu(self.bn(self.conv(x)))
        y = F.max_pool2d(y, 3, stride=2, padding=1, ceil_mode=True)
        y = y + F.relu6(self.conv3(y))  # exported as Relu then Clip
        a = F.leaky_relu(self.bn2(self.dw(y)), 0.1)
        b = F.hardswish(a) + torch.sigmoid(a) * torch.tanh(a) - F.hardsigmoid(a) / 2
        b = F.relu6(b * 3)
        u = self.up(b)
        u = F.avg_pool2d(u, 2, stride=2, count_include_pad=False)
        c = torch.cat([u, F.pad(a, (0, 0, 0, 0), mode="constant")], dim=1)
        c = c.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
        g = F.adaptive_avg_pool2d(c, 1).squeeze(-1).unsqueeze(-1)
        h = torch.flatten(c, 1)
        z = F.relu(self.bn1d(self.fc(h)))
        z = torch.matmul(z, self.w)
        z = z + g.flatten(1)[:, :6].pow(2).sqrt()
        return F.softmax(z.reshape(z.shape[0], 2, 3), dim=-1).reshape(-1, 6)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)
        self.bn3 = nn.BatchNorm1d(5)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)) + y)
        return self.bn3(self.fc(F.adaptive_avg_pool2d(y, 1).flatten(1)))


class Unreached(nn.Module):
    """ConvTranspose with output_padding at or past the stride (ONNX and PyTorch allow it below the dilation):
    the last outputs get no input, only the bias; oneDNN refuses that and the executor adds them itself, also
    through a fused Relu."""

    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(2, 3, 3, stride=1, dilation=2, output_padding=1)
        self.up2 = nn.ConvTranspose2d(3, 2, 3, stride=2, dilation=3, output_padding=2)

    def forward(self, x):
        return self.up2(F.relu(self.up(x)))


def bn_stats_from_onnx(path):
    m = onnx.load(path)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    return {n.input[3]: (inits[n.input[3]], inits[n.input[4]]) for n in m.graph.node
            if n.op_type == "BatchNormalization"}


def check_run(work):
    for name, model, x in (("zoo", Zoo(), torch.randn(5, 3, 16, 16)), ("block", Block(), torch.randn(7, 3, 9, 9)),
                           ("unreached", Unreached(), torch.randn(4, 2, 5, 5))):
        model = randomize(model)
        path = os.path.join(work, name + ".onnx")
        export(model, x, path)
        np.save(os.path.join(work, name + "_x.npy"), x.numpy())
        with torch.no_grad():
            want = model(x).numpy()
        # Folded, Conv + Relu / LeakyRelu follow each other: the executor fuses them.
        folded = os.path.join(work, name + "_folded.onnx")
        r = bnorm("fold", path, "-o", folded)
        check(r.returncode == 0, f"fold {name}", r.stderr)
        for batch, model_path in ((2, path), (64, path), (3, folded)):
            out = os.path.join(work, f"{name}_y{batch}.npy")
            r = bnorm("run", model_path, "--data", os.path.join(work, name + "_x.npy"), "-o", out, "--batch-size", batch)
            if r.returncode != 0:
                check(False, f"run {name} --batch-size {batch}", r.stderr)
                continue
            got = np.load(out)
            err = float(np.max(np.abs(got - want)) / max(1e-30, float(np.max(np.abs(want)))))
            check(got.shape == want.shape and err <= 1e-4,
                  f"run {os.path.basename(model_path)} (batch {batch}) matches PyTorch: max rel error {err:.2e}")
    r = bnorm("run", os.path.join(work, "zoo_folded.onnx"), "--data", os.path.join(work, "zoo_x.npy"), "-o",
              os.path.join(work, "zoo_profile.npy"), "--profile")
    check(all(f in r.stderr for f in ("Conv+Relu", "Conv+LeakyRelu")),
          "the executor fuses Conv with Relu and LeakyRelu", r.stderr)
    ops = {n.op_type for n in onnx.load(os.path.join(work, "zoo.onnx")).graph.node}
    print("     zoo ops:", " ".join(sorted(ops)))


def torch_precise_bn(model, x, batch):
    """Exact per-BN mean and unbiased variance of each BN's input over x,
    PyTorch running the batches in train mode (so each BN normalizes with
    the batch's statistics)."""
    model = model.train()
    inputs = {}
    hooks = [m.register_forward_pre_hook(lambda mod, inp, name=name: inputs.setdefault(name, []).append(
        inp[0].detach().double())) for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for i in range(0, len(x), batch):
            model(x[i:i + batch])
    for h in hooks:
        h.remove()
    stats = {}
    for name, parts in inputs.items():
        t = torch.cat(parts).transpose(0, 1).reshape(parts[0].shape[1], -1)
        stats[name + ".running_mean"] = (t.mean(1).numpy(), t.var(1, unbiased=True).numpy())
    return stats


def check_update_bn(work, model, x, label):
    """calibrate with the whole set as one batch == update_bn on one batch."""
    path = os.path.join(work, f"calib_{label}.onnx")
    export(model, x[:2], path)
    data = os.path.join(work, f"calib_{label}_x.npy")
    np.save(data, x.numpy())
    ref = Block()
    ref.load_state_dict(model.state_dict())
    from torch.optim.swa_utils import update_bn
    update_bn([x], ref)
    out = os.path.join(work, f"calibrated_{label}_full.onnx")
    r = bnorm("calibrate", path, "--data", data, "-o", out, "--batch-size", len(x), "--json")
    check(r.returncode == 0, f"calibrate {label} model, --batch-size = set size", r.stderr)
    if r.returncode != 0:
        return
    sd = ref.state_dict()
    m = onnx.load(out)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    bns = [n for n in m.graph.node if n.op_type == "BatchNormalization"]
    worst = 0.0
    for n, key in zip(bns, ("bn1", "bn2", "bn3")):
        mean, var = inits[n.input[3]], inits[n.input[4]]
        want_mean, want_var = sd[key + ".running_mean"].numpy(), sd[key + ".running_var"].numpy()
        worst = max(worst, float(np.max(np.abs(mean - want_mean) / (1e-3 + np.abs(want_mean)))),
                    float(np.max(np.abs(var - want_var) / np.abs(want_var))))
    check(len(bns) == 3 and worst < 1e-4,
          f"calibrate equals update_bn on one batch, {label} model (max rel diff {worst:.1e})")
    report = json.loads(r.stdout)
    check(len(report["batch_norms"]) == 3 and report["processes"] == 1, "calibrate --json reports 3 BN nodes")


def check_calibrate(work):
    model = randomize(Block())
    x = torch.randn(48, 3, 9, 9) * 2 + 0.5
    check_update_bn(work, model, x, "trained")
    # A fresh model: every BN has mean 0 / var 1, which the exporter shares
    # between the BNs behind Identity nodes; each must get its own values.
    check_update_bn(work, Block().eval(), x, "fresh")
    path = os.path.join(work, "calib_trained.onnx")
    data = os.path.join(work, "calib_trained_x.npy")
    # Smaller batches: the exact statistics over the set, batch by batch.
    for batch in (16, 20):
        out = os.path.join(work, f"calibrated_{batch}.onnx")
        r = bnorm("calibrate", path, "--data", data, "-o", out, "--batch-size", batch)
        if r.returncode != 0:
            check(False, f"calibrate --batch-size {batch}", r.stderr)
            continue
        fresh = Block()
        fresh.load_state_dict(model.state_dict())
        want = torch_precise_bn(fresh, x, batch)
        got = bn_stats_from_onnx(out)
        worst = 0.0
        for key, (mean, var) in got.items():
            wm, wv = want[key]
            worst = max(worst, float(np.max(np.abs(mean - wm) / (1e-3 + np.abs(wm)))),
                        float(np.max(np.abs(var - wv) / np.abs(wv))))
        check(worst < 1e-4, f"calibrate --batch-size {batch} gives the exact population statistics "
                            f"(max rel diff {worst:.1e})")
    r = bnorm("calibrate", path, "--data", data, "-o", os.path.join(work, "c1.onnx"), "--batch-size", 1)
    check(r.returncode == 3 and "more than 1 value per channel" in r.stderr and "--batch-size" in r.stderr
          and not os.path.exists(os.path.join(work, "c1.onnx")),
          "calibrate with batches of 1 row is refused (BatchNorm1d needs 2 values per channel)", r.stderr)
    # Old statistics with a NaN channel: the report names that channel for
    # both figures (the variance ratio skipped it).
    m = onnx.load(path)
    first_bn = next(n for n in m.graph.node if n.op_type == "BatchNormalization")
    var = next(t for t in m.graph.initializer if t.name == first_bn.input[4])
    values = numpy_helper.to_array(var).copy()
    values[2] = np.nan
    var.CopyFrom(numpy_helper.from_array(values, var.name))
    nan_var = os.path.join(work, "calib_nan_var.onnx")
    onnx.save(m, nan_var)
    r = bnorm("calibrate", nan_var, "--data", data, "-o", os.path.join(work, "c_nan_var.onnx"), "--json")
    first = json.loads(r.stdout)["batch_norms"][0] if r.returncode == 0 else {}
    check(first.get("max_mean_shift") == {"value": "NaN", "channel": 2}
          and first.get("max_var_ratio") == {"value": "NaN", "channel": 2},
          "calibrate's report names the channel whose old variance is NaN", r.stdout + r.stderr)
    # One NaN in the data makes every statistic after it NaN: refused, and
    # nothing written (prepare wrote a model that gave NaN for every input,
    # exit 0: its parity check let NaN agree with NaN).
    poisoned = x.numpy().copy()
    poisoned[3, 0, 5, 5] = np.nan
    nan_data = os.path.join(work, "calib_nan_x.npy")
    np.save(nan_data, poisoned)
    for cmd in (["calibrate", path, "--data", nan_data, "-o", os.path.join(work, "c_nan.onnx")],
                ["prepare", path, "--calib", nan_data, "-o", os.path.join(work, "c_nan.onnx")]):
        r = bnorm(*cmd)
        check(r.returncode == 3 and "recalibrated input_mean of channel" in r.stderr and " is NaN" in r.stderr
              and not os.path.exists(os.path.join(work, "c_nan.onnx")),
              f"{cmd[0]} with a NaN in the data is refused, nothing written", f"exit {r.returncode}: {r.stderr}")


def check_verify(work):
    src = os.path.join(work, "block.onnx")
    data = os.path.join(work, "block_x.npy")
    folded = os.path.join(work, "block_folded.onnx")
    bnorm("fold", src, "-o", folded)
    r = bnorm("verify", src, folded, "--data", data, "--json")
    report = json.loads(r.stdout) if r.stdout else {}
    check(r.returncode == 0 and report.get("passed") is True, "verify passes a folded model", r.stdout + r.stderr)
    m = onnx.load(folded)
    conv = next(t for t in m.graph.initializer if numpy_helper.to_array(t).ndim == 4)
    w = numpy_helper.to_array(conv).copy()
    w[0, 0, 0, 0] += 0.05
    conv.CopyFrom(numpy_helper.from_array(w, conv.name))
    perturbed = os.path.join(work, "block_perturbed.onnx")
    onnx.save(m, perturbed)
    r = bnorm("verify", src, perturbed, "--data", data)
    check(r.returncode == 1 and "FAIL" in r.stdout and "the models differ" in r.stdout,
          "verify fails (exit 1) on a perturbed model", r.stdout + r.stderr)
    # A float16 model against its float32 original: each gets the data in
    # its own input type, and the outputs are compared as values (verify
    # refused the float16 input).
    for elem, name in ((onnx.TensorProto.FLOAT, "relu32.onnx"), (onnx.TensorProto.FLOAT16, "relu16.onnx")):
        g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", elem, ["n", 3, 9, 9])],
                              [helper.make_tensor_value_info("y", elem, ["n", 3, 9, 9])])
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), os.path.join(work, name))
    relu32, relu16 = os.path.join(work, "relu32.onnx"), os.path.join(work, "relu16.onnx")
    r = bnorm("verify", relu32, relu16, "--data", data, "--rtol", "1e-3", "--json")
    report = json.loads(r.stdout) if r.stdout else {}
    worst = report["outputs"][0]["max_rel_error"] if report.get("outputs") else 1.0
    check(r.returncode == 0 and 1e-5 < worst <= 2 ** -11,
          f"verify compares a float16 model with a float32 one (max rel error {worst:.1e})", r.stdout + r.stderr)
    r = bnorm("verify", relu32, relu16, "--data", data)
    check(r.returncode == 1, "... and fails it at the default rtol 1e-4", r.stdout + r.stderr)
    # Two models that both give NaN everywhere do not agree (numpy.allclose).
    m = onnx.load(src)
    var = next(t for t in m.graph.initializer if "running_var" in t.name)
    var.CopyFrom(numpy_helper.from_array(np.full(numpy_helper.to_array(var).shape, -1.0, np.float32), var.name))
    nan_a = os.path.join(work, "block_nan_a.onnx")
    onnx.save(m, nan_a)
    var.CopyFrom(numpy_helper.from_array(np.full(numpy_helper.to_array(var).shape, -5.0, np.float32), var.name))
    nan_b = os.path.join(work, "block_nan_b.onnx")
    onnx.save(m, nan_b)
    r = bnorm("verify", nan_a, nan_b, "--data", data, "--json")
    report = json.loads(r.stdout) if r.stdout else {}
    check(r.returncode == 1 and report.get("passed") is False, "verify fails two models that both give NaN",
          r.stdout + r.stderr)
    # ... and says so in strict JSON: NaN and infinity are spelled as strings
    # (both were null, which the schema uses for "absent").
    def strict(token):
        raise ValueError(f"non-standard JSON token {token}")
    try:
        out = json.loads(r.stdout, parse_constant=strict)["outputs"][0]
    except (ValueError, KeyError, IndexError) as e:
        out = {"error": str(e)}
    check(out.get("max_abs_error") == "Infinity" and out.get("worst", {}).get("a") == "NaN"
          and out.get("worst", {}).get("b") == "NaN",
          "verify --json writes NaN and infinity as \"NaN\" / \"Infinity\"", r.stdout)
    # Outputs are paired by position: a model whose output has another name
    # is refused rather than compared against the wrong tensor.
    m = onnx.load(folded)
    old_name = m.graph.output[0].name
    for node in m.graph.node:
        for i, o in enumerate(node.output):
            if o == old_name:
                node.output[i] = "renamed"
    m.graph.output[0].name = "renamed"
    renamed = os.path.join(work, "block_renamed.onnx")
    onnx.save(m, renamed)
    r = bnorm("verify", src, renamed, "--data", data)
    check(r.returncode == 3 and "outputs differ" in r.stderr and "renamed" in r.stderr,
          "verify refuses models whose outputs are not the same ones", r.stdout + r.stderr)


def check_bad_data(work):
    model = os.path.join(work, "block.onnx")
    bad = os.path.join(work, "bad")
    os.makedirs(bad, exist_ok=True)
    good = np.random.randn(4, 3, 9, 9).astype(np.float32)
    cases = {
        "wrong_shape.npy": (np.random.randn(4, 3, 8, 9).astype(np.float32), ["differs from the model's", "dim 2"]),
        "wrong_rank.npy": (np.random.randn(4, 3, 9).astype(np.float32), ["rank"]),
        "wrong_dtype.npy": (np.zeros((4, 3, 9, 9), dtype=np.int64), ["dtype int64"]),
        "fortran.npy": (np.asfortranarray(good), ["Fortran"]),
        "object.npy": (np.array([None, 1], dtype=object), ["object"]),
    }
    for name, (array, words) in cases.items():
        np.save(os.path.join(bad, name), array, allow_pickle=True)
    with open(os.path.join(bad, "truncated.npy"), "wb") as f:
        np.save(f, good)
    with open(os.path.join(bad, "truncated.npy"), "r+b") as f:
        f.truncate(os.path.getsize(os.path.join(bad, "truncated.npy")) - 100)
    cases["truncated.npy"] = (None, ["truncated"])
    for name, (_, words) in sorted(cases.items()):
        for cmd in (["run", model, "--data", os.path.join(bad, name), "-o", os.path.join(bad, "out.npy")],
                    ["calibrate", model, "--data", os.path.join(bad, name), "-o", os.path.join(bad, "out.onnx")]):
            r = bnorm(*cmd)
            ok = (r.returncode == 3 and r.stderr.startswith("bnorm: error: ") and name in r.stderr
                  and all(w in r.stderr for w in words))
            check(ok, f"{cmd[0]} with {name} gives a clear error", f"exit {r.returncode}: {r.stderr.strip()}")
    check(sorted(os.listdir(bad)) == sorted(cases), "no output or temporary file left by the failures",
          sorted(os.listdir(bad)))
    r = bnorm("run", model, "--data", os.path.join(work, "block_x.npy"), "-o", os.path.join(work, "block_x.npy"))
    check(r.returncode == 3 and "never overwritten" in r.stderr, "run -o DATA is refused", r.stderr)


def check_fixed_batch(work):
    # torch.onnx.export without dynamic_axes fixes the batch dim (here at 2):
    # the commands default to that batch and refuse another before running.
    model = randomize(Block())
    x = torch.randn(6, 3, 9, 9)
    path = os.path.join(work, "fixed.onnx")
    torch.onnx.export(model, x[:2], path, training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
                      opset_version=13, input_names=["x"], output_names=["y"])
    check(onnx.load(path).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2,
          "the export without dynamic_axes fixes the batch at 2")
    data = os.path.join(work, "fixed_x.npy")
    np.save(data, x.numpy())
    with torch.no_grad():
        want = model(x).numpy()
    out = os.path.join(work, "fixed_y.npy")
    r = bnorm("run", path, "--data", data, "-o", out)
    ok = r.returncode == 0 and np.max(np.abs(np.load(out) - want)) <= 1e-4 * np.max(np.abs(want))
    check(ok, "run on a fixed-batch model uses its batch by default and matches PyTorch", r.stderr)
    r = bnorm("verify", path, path, "--data", data)
    check(r.returncode == 0, "verify uses the fixed batch by default", r.stdout + r.stderr)
    # A dynamic export of the same model as the reference: its default (64)
    # cannot run the fixed one, which is said before anything runs.
    dynamic = os.path.join(work, "dynamic.onnx")
    export(model, x, dynamic)
    r = bnorm("verify", dynamic, path, "--data", data)
    check(r.returncode == 3 and "fixed batch of 2" in r.stderr and "--batch-size 2" in r.stderr,
          "verify of a dynamic model against a fixed one names the batch size to use", r.stdout + r.stderr)
    r = bnorm("verify", dynamic, path, "--data", data, "--batch-size", 2)
    check(r.returncode == 0, "verify of a dynamic model against a fixed one with --batch-size 2 passes",
          r.stdout + r.stderr)
    r = bnorm("calibrate", path, "--data", data, "-o", os.path.join(work, "fixed_calibrated.onnx"))
    check(r.returncode == 0, "calibrate uses the fixed batch by default", r.stderr)
    bad = os.path.join(work, "fixed_bad.npy")
    r = bnorm("run", path, "--data", data, "-o", bad, "--batch-size", 4)
    check(r.returncode == 3 and "fixed batch of 2" in r.stderr and "--batch-size 2" in r.stderr
          and not os.path.exists(bad), "run --batch-size 4 on it is refused, naming the batch to use", r.stderr)
    odd = os.path.join(work, "fixed_x5.npy")
    np.save(odd, x.numpy()[:5])
    for cmd in (["run", path, "--data", odd, "-o", bad],
                ["calibrate", path, "--data", odd, "-o", os.path.join(work, "fixed_bad.onnx")]):
        r = bnorm(*cmd)
        check(r.returncode == 3 and "5 rows" in r.stderr and "batches of 2" in r.stderr
              and not os.path.exists(cmd[-1]), f"{cmd[0]} on 5 rows (not whole batches of 2) is refused",
              r.stderr)


def check_rows_mixed(work):
    # A model whose rows see each other (here Softmax over the batch axis) is
    # only right in one batch of all the rows: split, it is refused before
    # anything is written; in one batch it runs and matches torch.
    class Mix(torch.nn.Module):
        def forward(self, x):
            return torch.softmax(x, dim=0)

    x = torch.randn(5, 3)
    path = os.path.join(work, "mix.onnx")
    export(Mix(), x, path)
    data = os.path.join(work, "mix_x.npy")
    np.save(data, x.numpy())
    out = os.path.join(work, "mix_y.npy")
    r = bnorm("run", path, "--data", data, "-o", out, "--batch-size", 2)
    check(r.returncode == 3 and "depends on the other rows" in r.stderr and "--batch-size 5" in r.stderr
          and not os.path.exists(out), "a model mixing rows is refused when the rows are split", r.stderr)
    r = bnorm("run", path, "--data", data, "-o", out, "--batch-size", 5)
    ok = r.returncode == 0 and np.allclose(np.load(out), torch.softmax(x, dim=0).numpy(), atol=1e-6)
    check(ok, "in one batch it runs and matches torch", r.stderr)
    r = bnorm("verify", path, path, "--data", data, "--batch-size", 2)
    check(r.returncode == 3 and "depends on the other rows" in r.stderr, "verify refuses it split too", r.stderr)


def main():
    global BNORM
    BNORM, work = sys.argv[1:3]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    check_run(work)
    check_calibrate(work)
    check_verify(work)
    check_bad_data(work)
    check_fixed_batch(work)
    check_rows_mixed(work)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
