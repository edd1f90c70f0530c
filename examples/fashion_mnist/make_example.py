#!/usr/bin/python3
"""Build the bundled Fashion-MNIST example: a small BatchNorm CNN, its ONNX
export, and a brightness/contrast-shifted "deployment" set on which the stored
BatchNorm statistics are stale.

    /usr/bin/python3 examples/fashion_mnist/make_example.py [OUT_DIR]

OUT_DIR defaults to the directory of this script. Writes model.onnx, calib.npy,
eval.npz, expected.json (and reads nothing but Debian's dataset-fashion-mnist).
Progress goes to stderr. Same seed => same files (on CPU with 2 threads).
"""

import copy
import gzip
import hashlib
import io
import json
import os
import re
import struct
import sys
import tempfile
import time
import zipfile

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F

DATA_DIR = "/usr/share/datasets/fashion-mnist"
SEED = 20231121

# Per-pixel mean and std of the Fashion-MNIST training images (pixel / 255).
# Every input to the model, shifted or not, is normalized with these.
TRAIN_MEAN = 0.2860
TRAIN_STD = 0.3530

# The deployment shift, applied to raw 0..255 pixels before normalization:
# a darker-contrast, brighter sensor. pixel' = clip(CONTRAST * pixel + BRIGHTNESS, 0, 255)
SHIFT_CONTRAST = 0.5
SHIFT_BRIGHTNESS = 100.0

EPOCHS = 3
BATCH = 128
LEARNING_RATE = 2e-3
THREADS = 2

N_CALIB = 1000   # shifted training images -> calib.npy (raw .npy, 3.1 MB)
N_EVAL = 2000    # shifted test images -> eval.npz (compressed)
N_REFERENCE_LOGITS = 4


def log(msg):
    print(f"[make_example] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data

def read_idx(path, expected_magic, expected_ndim):
    """IDX: big-endian magic (0, 0, dtype code, ndim), ndim big-endian u32 dims, data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != expected_magic:
        raise ValueError(f"{path}: magic 0x{magic:08x}, expected 0x{expected_magic:08x}")
    ndim = magic & 0xFF
    if ndim != expected_ndim:
        raise ValueError(f"{path}: {ndim} dims, expected {expected_ndim}")
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {data.size} bytes of data for dims {dims}")
    return data.reshape(dims)


def load_split(prefix):
    # 0x0803: unsigned byte, 3 dims (images); 0x0801: unsigned byte, 1 dim (labels).
    images = read_idx(os.path.join(DATA_DIR, f"{prefix}-images-idx3-ubyte.gz"), 0x00000803, 3)
    labels = read_idx(os.path.join(DATA_DIR, f"{prefix}-labels-idx1-ubyte.gz"), 0x00000801, 1)
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
        raise ValueError(f"{prefix}: images {images.shape} vs labels {labels.shape}")
    if labels.max() > 9:
        raise ValueError(f"{prefix}: label {labels.max()} out of range")
    return images, labels.astype(np.int64)


def shift_pixels(images_u8):
    """The deployment shift on raw pixels (float, not re-quantized)."""
    p = images_u8.astype(np.float32)
    return np.clip(np.float32(SHIFT_CONTRAST) * p + np.float32(SHIFT_BRIGHTNESS), 0.0, 255.0)


def normalize(pixels):
    """(N,28,28) pixels in 0..255 -> (N,1,28,28) float32 with the training constants."""
    x = (pixels.astype(np.float32) / np.float32(255.0) - np.float32(TRAIN_MEAN)) / np.float32(TRAIN_STD)
    return np.ascontiguousarray(x[:, None, :, :], dtype="<f4")


# --------------------------------------------------------------------------- model

class ConvBNReLU(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class ResidualBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + x)


class FashionNet(nn.Module):
    """28x28 -> 16@28 -> pool -> 32@14 -> residual 32@14 -> pool -> 64@7 -> pool
    -> 576 -> Linear-BN1d-ReLU 128 -> Linear 10."""

    def __init__(self):
        super().__init__()
        self.block1 = ConvBNReLU(1, 16)
        self.block2 = ConvBNReLU(16, 32)
        self.res = ResidualBlock(32)
        self.block3 = ConvBNReLU(32, 64)
        # Linear keeps its default bias even though BN follows: that is what
        # users write, and it gives the Gemm fold a bias to fold into.
        self.fc1 = nn.Linear(64 * 3 * 3, 128)
        self.bn_fc1 = nn.BatchNorm1d(128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = self.block1(x)                 # 16 x 28 x 28
        x = F.max_pool2d(x, 2)             # 16 x 14 x 14
        x = self.block2(x)                 # 32 x 14 x 14
        x = self.res(x)                    # 32 x 14 x 14
        x = F.max_pool2d(x, 2)             # 32 x 7 x 7
        x = self.block3(x)                 # 64 x 7 x 7
        x = F.max_pool2d(x, 2)             # 64 x 3 x 3
        x = torch.flatten(x, 1)            # 576
        x = F.relu(self.bn_fc1(self.fc1(x)))
        return self.fc2(x)


def batch_norms(model):
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def train(model, x_train, y_train):
    gen = torch.Generator().manual_seed(SEED)
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    steps_per_epoch = (len(x_train) + BATCH - 1) // BATCH
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=LEARNING_RATE, epochs=EPOCHS, steps_per_epoch=steps_per_epoch)
    model.train()
    for epoch in range(EPOCHS):
        perm = torch.randperm(len(x_train), generator=gen)
        t0 = time.time()
        loss_sum, correct, seen = 0.0, 0, 0
        for step in range(steps_per_epoch):
            idx = perm[step * BATCH:(step + 1) * BATCH]
            if len(idx) < 2:   # BN in training needs more than one value per channel
                continue
            xb, yb = x_train[idx], y_train[idx]
            opt.zero_grad(set_to_none=True)
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            correct += (out.argmax(1) == yb).sum().item()
            seen += len(idx)
            if (step + 1) % 100 == 0 or step + 1 == steps_per_epoch:
                log(f"epoch {epoch + 1}/{EPOCHS} step {step + 1}/{steps_per_epoch} "
                    f"loss {loss_sum / seen:.4f} acc {correct / seen:.4f} "
                    f"({time.time() - t0:.1f} s)")
    model.eval()


@torch.no_grad()
def predict(model, x, batch=1000):
    model.eval()
    return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])


def accuracy(model, x, y):
    pred = predict(model, x).argmax(1)
    correct = int((pred == y).sum().item())
    return {"correct": correct, "total": int(len(y)), "accuracy": correct / len(y)}


@torch.no_grad()
def recalibrate_precise(model, x_calib, batch=500):
    """Precise BN: for each BN in execution order, set running_mean to the exact
    mean of its input over the whole calibration set and running_var to the
    unbiased variance, where the input is computed in eval mode with every
    earlier BN already recalibrated. After this, evaluating the model on the
    calibration set reproduces exactly the statistics it stores (a fixed point).
    Moments are merged per batch in float64 (Chan et al.), not E[x^2]-E[x]^2."""
    model.eval()
    order = execution_order(model, x_calib[:2])
    for name, bn in order:
        acc = {"n": 0, "mean": None, "m2": None}

        def hook(module, inputs, output, _acc=acc):
            x = inputs[0].double()
            dims = [0] + list(range(2, x.dim()))
            n_b = x.numel() // x.shape[1]
            mean_b = x.mean(dim=dims)
            shape = [1, -1] + [1] * (x.dim() - 2)
            m2_b = ((x - mean_b.view(shape)) ** 2).sum(dim=dims)
            if _acc["n"] == 0:
                _acc["n"], _acc["mean"], _acc["m2"] = n_b, mean_b, m2_b
            else:
                n_a = _acc["n"]
                n = n_a + n_b
                delta = mean_b - _acc["mean"]
                _acc["mean"] = _acc["mean"] + delta * (n_b / n)
                _acc["m2"] = _acc["m2"] + m2_b + delta * delta * (n_a * n_b / n)
                _acc["n"] = n

        handle = bn.register_forward_hook(hook)
        for i in range(0, len(x_calib), batch):
            model(x_calib[i:i + batch])
        handle.remove()
        n = acc["n"]
        bn.running_mean.copy_(acc["mean"].float())
        bn.running_var.copy_((acc["m2"] / (n - 1)).float())
        log(f"  recalibrated {name}: {n} values per channel")
    return order


def execution_order(model, x_probe):
    order, handles = [], []
    for name, bn in batch_norms(model):
        handles.append(bn.register_forward_hook(
            lambda m, i, o, _name=name: order.append((_name, m))))
    with torch.no_grad():
        model(x_probe)
    for h in handles:
        h.remove()
    return order


@torch.no_grad()
def recalibrate_update_bn(model, x_calib):
    """The other common reading: torch.optim.swa_utils.update_bn (train mode,
    momentum=None) with the whole set as one batch. Earlier BNs then normalize
    with the biased batch variance, so the result differs from the precise
    pass by O(1/n); computed only to report that difference."""
    m = copy.deepcopy(model)
    torch.optim.swa_utils.update_bn([x_calib], m)
    m.eval()
    return m


# --------------------------------------------------------------------------- export

def export_onnx(model, path):
    model.eval()
    dummy = torch.zeros(2, 1, 28, 28)
    tmp = path + ".tmp"
    torch.onnx.export(
        model, dummy, tmp,
        export_params=True,
        opset_version=13,
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}},
        training=torch.onnx.TrainingMode.PRESERVE,
        # Constant folding would fold BN into Conv/Gemm in the exporter.
        do_constant_folding=False,
    )
    onnx_model = onnx.load(tmp)
    onnx.checker.check_model(onnx_model)
    os.replace(tmp, path)
    return onnx_model


def onnx_bn_names(onnx_model, model):
    """Map each BN module to its ONNX node through the scale initializer name."""
    bn_nodes = [n for n in onnx_model.graph.node if n.op_type == "BatchNormalization"]
    expected = len(batch_norms(model))
    assert len(bn_nodes) == expected, \
        f"exported graph has {len(bn_nodes)} BatchNormalization nodes, model has {expected} BN modules"
    init_names = {i.name for i in onnx_model.graph.initializer}
    by_scale = {}
    for n in bn_nodes:
        for a in n.attribute:
            if a.name == "training_mode":
                assert a.i == 0, f"{n.name}: training_mode={a.i}"
        assert len(n.output) == 1, f"{n.name}: {len(n.output)} outputs (training outputs exported)"
        for inp in n.input[1:]:
            assert inp in init_names, f"{n.name}: parameter {inp} is not an initializer"
        by_scale[n.input[1]] = n
    names = {}
    for name, _ in batch_norms(model):
        node = by_scale.get(f"{name}.weight")
        assert node is not None, f"no BatchNormalization node with scale {name}.weight"
        names[name] = {"node": node.name, "input_mean": node.input[3], "input_var": node.input[4]}
    return names


# --------------------------------------------------------------------------- output

def write_atomic(path, write):
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.basename(path))
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates 0600; give the file the mode an ordinary open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_npz(path, **arrays):
    """np.savez_compressed, but with fixed zip timestamps so that the file is
    byte-identical from run to run (numpy stamps the current time). np.load
    reads it like any .npz."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=9)


def to_json(obj):
    """Indented JSON with lists of numbers kept on one line."""
    text = json.dumps(obj, indent=1)
    return re.sub(r"\[\s*([-+0-9.eE,\s]+?)\s*\]",
                  lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]",
                  text) + "\n"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def rounded(values, digits=9):
    return [float(f"{v:.{digits}g}") for v in values]


def main():
    out_dir = os.path.abspath(sys.argv[1] if len(sys.argv) > 1
                              else os.path.dirname(os.path.abspath(__file__)))
    if len(sys.argv) > 2:
        sys.exit("usage: make_example.py [OUT_DIR]")
    os.makedirs(out_dir, exist_ok=True)
    t_start = time.time()

    torch.manual_seed(SEED)
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(SEED)

    log(f"reading IDX files from {DATA_DIR}")
    train_u8, train_labels = load_split("train")
    test_u8, test_labels = load_split("t10k")
    log(f"train {train_u8.shape}, test {test_u8.shape}; "
        f"train pixel mean {train_u8.mean() / 255:.4f} std {(train_u8 / 255).std():.4f} "
        f"(constants {TRAIN_MEAN}, {TRAIN_STD})")

    x_train = torch.from_numpy(normalize(train_u8))
    y_train = torch.from_numpy(train_labels)

    model = FashionNet()
    n_params = sum(p.numel() for p in model.parameters())
    n_buffers = sum(b.numel() for b in model.buffers())
    log(f"model: {n_params} parameters, {len(batch_norms(model))} BatchNorm modules")

    t0 = time.time()
    train(model, x_train, y_train)
    train_seconds = time.time() - t0
    log(f"trained in {train_seconds:.1f} s")

    model_path = os.path.join(out_dir, "model.onnx")
    onnx_model = export_onnx(model, model_path)
    bn_onnx = onnx_bn_names(onnx_model, model)
    op_counts = {}
    for n in onnx_model.graph.node:
        op_counts[n.op_type] = op_counts.get(n.op_type, 0) + 1
    log(f"exported {model_path}: {dict(sorted(op_counts.items()))}")

    # The deployment distribution. Calibration images come from the training
    # split, evaluation images from the test split; both are shifted and then
    # normalized with the ORIGINAL training constants.
    calib_idx = np.sort(rng.choice(len(train_u8), N_CALIB, replace=False))
    eval_idx = np.sort(rng.choice(len(test_u8), N_EVAL, replace=False))
    x_calib = normalize(shift_pixels(train_u8[calib_idx]))
    x_eval_shifted = normalize(shift_pixels(test_u8[eval_idx]))
    x_eval_clean = normalize(test_u8[eval_idx])
    y_eval = np.ascontiguousarray(test_labels[eval_idx], dtype="<i8")

    tc = torch.from_numpy(x_calib)
    te_shift = torch.from_numpy(x_eval_shifted)
    te_clean = torch.from_numpy(x_eval_clean)
    ty = torch.from_numpy(y_eval)
    t_test_clean = torch.from_numpy(normalize(test_u8))
    t_test_shift = torch.from_numpy(normalize(shift_pixels(test_u8)))
    t_test_y = torch.from_numpy(test_labels)

    acc_clean = accuracy(model, te_clean, ty)
    acc_stored = accuracy(model, te_shift, ty)
    full_clean = accuracy(model, t_test_clean, t_test_y)
    full_stored = accuracy(model, t_test_shift, t_test_y)
    logits_stored = predict(model, te_shift[:N_REFERENCE_LOGITS])

    before = {name: (bn.running_mean.double().clone(), bn.running_var.double().clone())
              for name, bn in batch_norms(model)}

    log(f"recalibrating BN statistics on {N_CALIB} shifted training images (precise BN)")
    recal = copy.deepcopy(model)
    order = recalibrate_precise(recal, tc)
    acc_recal = accuracy(recal, te_shift, ty)
    full_recal = accuracy(recal, t_test_shift, t_test_y)
    acc_recal_clean = accuracy(recal, te_clean, ty)
    logits_recal = predict(recal, te_shift[:N_REFERENCE_LOGITS])

    alt = recalibrate_update_bn(model, tc)
    alt_bns = dict(batch_norms(alt))
    update_bn_diff = 0.0
    for name, bn in batch_norms(recal):
        for a, b in ((bn.running_mean, alt_bns[name].running_mean),
                     (bn.running_var, alt_bns[name].running_var)):
            update_bn_diff = max(update_bn_diff,
                                 float(((a.double() - b.double()).abs() / (b.double().abs() + 1e-12)).max()))
    acc_alt = accuracy(alt, te_shift, ty)

    log(f"eval set ({N_EVAL} test images): clean {acc_clean['accuracy']:.4f}, "
        f"shifted+stored {acc_stored['accuracy']:.4f}, shifted+recalibrated {acc_recal['accuracy']:.4f}")
    log(f"full test set (10000): clean {full_clean['accuracy']:.4f}, "
        f"shifted+stored {full_stored['accuracy']:.4f}, shifted+recalibrated {full_recal['accuracy']:.4f}")
    log(f"update_bn (one whole-set batch) vs precise: max relative stat diff {update_bn_diff:.2e}, "
        f"accuracy {acc_alt['accuracy']:.4f}")
    if not acc_recal["accuracy"] > acc_stored["accuracy"] + 0.10:
        raise SystemExit("the shift does not separate stored from recalibrated statistics; change it")

    calib_path = os.path.join(out_dir, "calib.npy")
    eval_path = os.path.join(out_dir, "eval.npz")
    def write_calib(p):
        with open(p, "wb") as f:
            np.save(f, x_calib, allow_pickle=False)
    write_atomic(calib_path, write_calib)

    write_atomic(eval_path, lambda p: write_npz(p, x=x_eval_shifted, labels=y_eval))

    recal_bns = dict(batch_norms(recal))
    bn_summary = []
    for name, _ in order:
        m0, v0 = before[name]
        bn = recal_bns[name]
        m1, v1 = bn.running_mean.double(), bn.running_var.double()
        bn_summary.append({
            "module": name,
            "onnx_node": bn_onnx[name]["node"],
            "onnx_input_mean": bn_onnx[name]["input_mean"],
            "onnx_input_var": bn_onnx[name]["input_var"],
            "channels": int(m0.numel()),
            "epsilon": bn.eps,
            "stored": {"mean_of_running_mean": float(m0.mean()), "mean_of_running_var": float(v0.mean())},
            "recalibrated": {"mean_of_running_mean": float(m1.mean()), "mean_of_running_var": float(v1.mean()),
                             "running_mean": rounded(m1.tolist()), "running_var": rounded(v1.tolist())},
        })

    expected = {
        "description": "Fashion-MNIST CNN with BatchNorm; eval.npz and calib.npy are brightness/contrast-shifted, "
                       "so the stored BN statistics are stale and recalibration on calib.npy restores accuracy.",
        "generator": "/usr/bin/python3 examples/fashion_mnist/make_example.py",
        "seed": SEED,
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
        "numpy_version": np.__version__,
        "threads": THREADS,
        "normalization": f"x = (pixel / 255 - {TRAIN_MEAN}) / {TRAIN_STD}, float32, shape (N,1,28,28)",
        "shift": f"pixel' = clip({SHIFT_CONTRAST} * pixel + {SHIFT_BRIGHTNESS}, 0, 255), "
                 "applied to raw pixels before normalization, not re-quantized",
        "training": {"epochs": EPOCHS, "batch": BATCH, "optimizer": "Adam + OneCycleLR",
                     "max_lr": LEARNING_RATE, "images": int(len(train_u8))},
        "model": {"file": "model.onnx", "opset": 13, "input": "x", "output": "logits",
                  "parameters": n_params, "buffers": n_buffers,
                  "batch_norm_nodes": len(bn_summary), "onnx_ops": dict(sorted(op_counts.items()))},
        "calibration": {"file": "calib.npy", "images": N_CALIB, "source": "shifted training images",
                        "dtype": "float32", "shape": list(x_calib.shape)},
        "evaluation": {"file": "eval.npz", "images": N_EVAL, "source": "shifted test images",
                       "arrays": {"x": ["float32", list(x_eval_shifted.shape)],
                                  "labels": ["int64", list(y_eval.shape)]}},
        "recalibration_semantics":
            "precise BN: each BN in execution order gets running_mean = exact mean of its input over the whole "
            "calibration set and running_var = unbiased variance (n-1), with the input computed in eval mode "
            "after every earlier BN has been recalibrated. momentum and epsilon are unchanged.",
        "accuracy": {
            "clean_stored": acc_clean,
            "shifted_stored": acc_stored,
            "shifted_recalibrated": acc_recal,
            "clean_after_recalibration_for_shift": acc_recal_clean,
            "full_test_set": {"clean_stored": full_clean, "shifted_stored": full_stored,
                              "shifted_recalibrated": full_recal},
        },
        "update_bn_comparison": {
            "method": "torch.optim.swa_utils.update_bn, momentum=None, one batch = whole calibration set",
            "max_relative_stat_difference_vs_precise": update_bn_diff,
            "shifted_accuracy": acc_alt,
        },
        "batch_norms": bn_summary,
        "reference_logits": {
            "images": f"eval.npz x[0:{N_REFERENCE_LOGITS}]",
            "stored": [rounded(r) for r in logits_stored.tolist()],
            "recalibrated": [rounded(r) for r in logits_recal.tolist()],
        },
        "files": {os.path.basename(p): {"bytes": os.path.getsize(p), "sha256": sha256(p)}
                  for p in (model_path, calib_path, eval_path)},
    }
    expected_path = os.path.join(out_dir, "expected.json")

    def write_json(p):
        with open(p, "w") as f:
            f.write(to_json(expected))
    write_atomic(expected_path, write_json)
    for p in (model_path, calib_path, eval_path, expected_path):
        log(f"wrote {p} ({os.path.getsize(p)} bytes)")
    log(f"done in {time.time() - t_start:.1f} s")


if __name__ == "__main__":
    main()
