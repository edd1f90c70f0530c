"""bnorm calibrate under mpirun gives the one-process result.

Usage: check_calibrate_mpi.py BNORM MPIRUN WORK_DIR

A small PyTorch-exported model with BatchNorm2d and BatchNorm1d is
calibrated on 100 rows in one process and under `mpirun -np 2` and `-np 3`
(uneven shards: a batch of 16 rows splits 5/5/6, the last batch of 4 rows
2/2 or 1/1/2), and with batches smaller than the number of processes (some
ranks get no rows in a step). The statistics written must equal the
one-process ones within float tolerance, and an error on one rank must stop
every rank with a non-zero exit instead of hanging. Run with /usr/bin/python3.
"""
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import numpy_helper

failures = 0


def check(ok, what, detail=""):
    global failures
    print(("ok   " if ok else "FAIL ") + what + ("" if ok or not detail else "\n     " + str(detail)))
    failures += not ok


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 4)
        self.bn1d = nn.BatchNorm1d(4)

    def forward(self, x):
        y = F.relu(self.bn(self.conv(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        return self.bn1d(self.fc(F.adaptive_avg_pool2d(y, 1).flatten(1)))


def stats(path):
    m = onnx.load(path)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    return [(inits[n.input[3]], inits[n.input[4]]) for n in m.graph.node if n.op_type == "BatchNormalization"]


def main():
    bnorm, mpirun, work = sys.argv[1:4]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    torch.manual_seed(1)
    model = Net().eval()
    model_path = os.path.join(work, "net.onnx")
    torch.onnx.export(model, torch.randn(2, 3, 6, 6), model_path, training=torch.onnx.TrainingMode.PRESERVE,
                      do_constant_folding=False, opset_version=13, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    data = os.path.join(work, "x.npy")
    np.save(data, (np.random.default_rng(3).standard_normal((100, 3, 6, 6)) * 3 + 1).astype(np.float32))
    mpi = [mpirun, "--allow-run-as-root", "--oversubscribe", "--mca", "btl", "self,vader"]
    for batch in (16, 2):
        one = os.path.join(work, f"one_{batch}.onnx")
        r = subprocess.run([bnorm, "calibrate", model_path, "--data", data, "-o", one, "--batch-size", str(batch)],
                           capture_output=True, text=True)
        check(r.returncode == 0, f"one process, batch {batch}", r.stderr)
        if r.returncode:
            continue
        want = stats(one)
        for np_ in (2, 3):
            out = os.path.join(work, f"np{np_}_{batch}.onnx")
            r = subprocess.run(mpi + ["-np", str(np_), bnorm, "calibrate", model_path, "--data", data, "-o", out,
                                      "--batch-size", str(batch), "--json"], capture_output=True, text=True,
                               timeout=300)
            if r.returncode != 0:
                check(False, f"mpirun -np {np_} batch {batch}", r.stdout + r.stderr)
                continue
            got = stats(out)
            worst = max(max(float(np.max(np.abs(g - w) / (1e-6 + np.abs(w)))) for g, w in zip(gs, ws))
                        for gs, ws in zip(got, want))
            check(len(got) == 3 and worst < 1e-5,
                  f"mpirun -np {np_} --batch-size {batch} equals one process (max rel diff {worst:.1e})")
            check('"processes": ' + str(np_) in r.stdout, f"the -np {np_} report counts {np_} processes")
    # An error on every rank (bad batch size for BatchNorm1d) stops them all.
    r = subprocess.run(mpi + ["-np", "3", bnorm, "calibrate", model_path, "--data", data, "-o",
                              os.path.join(work, "bad.onnx"), "--batch-size", "1"],
                       capture_output=True, text=True, timeout=300)
    check(r.returncode != 0 and "more than 1 value per channel" in r.stderr
          and not os.path.exists(os.path.join(work, "bad.onnx")),
          "an error under mpirun stops every rank with a message and no output", r.stderr[-500:])
    # The same error found in a step where only rank 2 has rows (100 rows in
    # batches of 3: the last one has 1 row): the ranks without rows fail
    # too, and rank 0 writes nothing.
    late = os.path.join(work, "late.onnx")
    r = subprocess.run(mpi + ["-np", "3", bnorm, "calibrate", model_path, "--data", data, "-o", late,
                              "--batch-size", "3"], capture_output=True, text=True, timeout=300)
    check(r.returncode == 3 and not os.path.exists(late),
          "an error in a step only one rank has rows for leaves no output (exit 3)", r.stderr[-500:])
    # Each error keeps its exit status under mpirun (4: a missing file).
    r = subprocess.run(mpi + ["-np", "2", bnorm, "calibrate", model_path, "--data", os.path.join(work, "none.npy"),
                              "-o", late], capture_output=True, text=True, timeout=300)
    check(r.returncode == 4, "a missing data file exits 4 under mpirun as in one process", r.stderr[-500:])
    # Ranks reading data of different row counts (two programs, two working
    # directories) are refused on every rank instead of one waiting forever.
    for rank, rows in ((0, 37), (1, 53)):
        os.makedirs(os.path.join(work, f"r{rank}"), exist_ok=True)
        np.save(os.path.join(work, f"r{rank}", "x.npy"), np.ones((rows, 3, 6, 6), np.float32))
    cmd = [bnorm, "calibrate", model_path, "--data", "x.npy", "-o", "out.onnx", "--batch-size", "8"]
    r = subprocess.run(mpi + ["-np", "1", "-wdir", os.path.join(work, "r0")] + cmd + [":", "-np", "1", "-wdir",
                              os.path.join(work, "r1")] + cmd, capture_output=True, text=True, timeout=300)
    check(r.returncode == 3 and "every process must read the same data" in r.stderr
          and not os.path.exists(os.path.join(work, "r0", "out.onnx")),
          "ranks with different row counts are refused, nothing written", r.stderr[-500:])
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
