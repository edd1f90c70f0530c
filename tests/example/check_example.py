"""The bundled Fashion-MNIST example through `bnorm prepare`: accuracy on
the shifted data is recovered by recalibration, the folded model keeps
parity, and the recalibrated statistics equal PyTorch's (expected.json,
written by examples/fashion_mnist/make_example.py).

Usage: check_example.py BNORM EXAMPLE_DIR WORK_DIR

The whole calibration set is one batch here (--batch-size 1000), where the
one-pass "precise BN" statistics and the reference's layer-by-layer exact
statistics agree to ~1e-5 (smaller batches differ by up to ~1e-2 in the
variances; see examples/fashion_mnist/README.md). Accuracies may differ
from PyTorch's by a few images (float32 on another implementation).
Run with /usr/bin/python3.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
from onnx import numpy_helper

failures = 0


def check(ok, what, detail=""):
    global failures
    print(("ok   " if ok else "FAIL ") + what + ("" if ok or not detail else "\n     " + str(detail)))
    failures += not ok


def main():
    bnorm, example, work = sys.argv[1:4]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    expected = json.load(open(os.path.join(example, "expected.json")))
    acc = expected["accuracy"]
    out = os.path.join(work, "prepared.onnx")
    r = subprocess.run([bnorm, "prepare", os.path.join(example, "model.onnx"), "--calib",
                        os.path.join(example, "calib.npy"), "--eval", os.path.join(example, "eval.npz"), "-o", out,
                        "--batch-size", "1000", "--json"], capture_output=True, text=True)
    check(r.returncode == 0 and os.path.exists(out), "bnorm prepare succeeds and writes the model", r.stderr)
    if r.returncode != 0:
        return 1
    report = json.loads(r.stdout)
    ev = report["evaluation"]
    before, recal, after = (ev[k]["accuracy"] for k in ("original", "calibrated", "folded"))
    print(f"     accuracy on the shifted eval set: original {before:.4f}, calibrated {recal:.4f}, folded {after:.4f}"
          f" (PyTorch: {acc['shifted_stored']['accuracy']:.4f} -> {acc['shifted_recalibrated']['accuracy']:.4f})")
    check(not report["findings"], "inspect finds nothing wrong with the example", report["findings"])
    check(abs(before - acc["shifted_stored"]["accuracy"]) <= 0.005, "original accuracy matches PyTorch's")
    check(abs(recal - acc["shifted_recalibrated"]["accuracy"]) <= 0.005, "calibrated accuracy matches PyTorch's")
    check(recal >= before + 0.3, "recalibration recovers the accuracy the shift cost")
    check(abs(after - recal) <= 0.001, "the folded model scores as the calibrated one")
    check(report["fold"]["folded"] == 6 and report["fold"]["left"] == 0 and report["parity"]["passed"],
          "all 6 BN folded and parity verified", report["fold"])
    # The statistics: prepare writes the folded model, so calibrate again.
    calibrated = os.path.join(work, "calibrated.onnx")
    r = subprocess.run([bnorm, "calibrate", os.path.join(example, "model.onnx"), "--data",
                        os.path.join(example, "calib.npy"), "-o", calibrated, "--batch-size", "1000"],
                       capture_output=True, text=True)
    check(r.returncode == 0, "bnorm calibrate on the example", r.stderr)
    m = onnx.load(calibrated)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    nodes = {n.name: n for n in m.graph.node}
    worst_mean = worst_var = 0.0
    for bn in expected["batch_norms"]:
        n = nodes[bn["onnx_node"]]
        mean, var = inits[n.input[3]].astype(np.float64), inits[n.input[4]].astype(np.float64)
        want_mean = np.array(bn["recalibrated"]["running_mean"])
        want_var = np.array(bn["recalibrated"]["running_var"])
        worst_mean = max(worst_mean, float(np.max(np.abs(mean - want_mean) / np.sqrt(want_var))))
        worst_var = max(worst_var, float(np.max(np.abs(var - want_var) / want_var)))
    check(worst_mean < 1e-3 and worst_var < 1e-3,
          f"recalibrated statistics equal PyTorch's (mean within {worst_mean:.1e} sd, var within {worst_var:.1e})")
    # Without --eval, prepare evaluates on CALIB, with its labels when it has
    # them: the same accuracies as naming that file as EVAL too.
    eval_npz = os.path.join(example, "eval.npz")
    runs = []
    for extra in ([], ["--eval", eval_npz]):
        r = subprocess.run([bnorm, "prepare", os.path.join(example, "model.onnx"), "--calib", eval_npz, "-o",
                            os.path.join(work, "self.onnx"), "--batch-size", "1000", "--json"] + extra,
                           capture_output=True, text=True)
        runs.append(json.loads(r.stdout)["evaluation"] if r.returncode == 0 else None)
    check(runs[0] is not None and runs[0]["original"]["accuracy"] is not None and
          all(runs[0][k]["accuracy"] == runs[1][k]["accuracy"] for k in ("original", "calibrated", "folded")),
          "without --eval the calibration set's labels score the models", runs)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
